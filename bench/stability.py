"""Stability of learning in the demo world, in-process, over many seeds (issue 14).

An in-process replica of ``placement demo``'s loop: the demo's audience
(3 segments x 3 slots, a planted best collection per cell, collections in the
catalog's alphabetical order), a serving :class:`Policy` that decides, and a
:class:`LogLearner` that learns each decision's joined DSJSON line ``lag``
decisions later (the reward window) and publishes a model every
``publish_every`` examples, which the serving side then loads: the server's
learning path without gRPC, threads or clocks, so a seed gives one result.

At every checkpoint each cell's P(best) is read off the serving model: the
probability its slot gives the planted best when the earlier slots took
theirs, averaged over hours (see :func:`p_best`). Reported over seeds:

* **collapse rate**: share of seeds in which some cell ends below 0.5;
* **fell**: share of seeds in which a cell, once converged (P(best) >= 0.9
  at two checkpoints in a row), falls below 0.5 at a later checkpoint;
  **fell (strict)**: the same with converged at any one checkpoint;
* **checkpoint collapse share**: share of (cell, checkpoint) pairs after
  ``--warmup`` decisions with P(best) < 0.5;
* **mean final P(best)** and the worst final cell.

    .venv/bin/python -m bench.stability --seeds 20 --decisions 6000
    .venv/bin/python -m bench.stability --seeds 13,14,39 --lag 300 --settings interactions=CSA
    .venv/bin/python -m bench.stability --learning-rate 0.1
    .venv/bin/python -m bench.stability --seeds 13,14 --lag 300 --trace   # what each fall looked like
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from bandit.logformat.events import DecisionEvent, JoinedEvent, dumps, joined_to_dsjson
from bandit.features import Candidate, FeatureGroup, SlotSpec
from bandit.decision import DecisionInput
from bandit.policy import LogLearner, Policy
from bandit.vwargs import LearningSettings
from simulator.specs import parse_settings, settings_label
from simulator.demo import BEST, COLLECTIONS, SEGMENTS, SLOTS, Audience

CONVERGED, COLLAPSED = 0.9, 0.5
CANDIDATES = tuple(Candidate(cid, (FeatureGroup("collection", feats),)) for cid, feats in sorted(COLLECTIONS.items()))
CELLS = tuple((seg, slot) for seg in SEGMENTS for slot in SLOTS)


@dataclass(frozen=True)
class SeedResult:
    """P(best) of every cell at every checkpoint (decisions made so far)."""

    seed: int
    checkpoints: tuple[int, ...]
    p_best: tuple[dict[tuple[str, str], float], ...]
    # with trace: each cell's predicted reward per collection (hour 0.5, the
    # earlier slots holding their planted bests) at every checkpoint
    scores: tuple[dict[tuple[str, str], dict[str, float]], ...] = ()

    @property
    def final(self) -> dict[tuple[str, str], float]:
        return self.p_best[-1]

    def fell(self, settled: int = 1) -> list[tuple[tuple[str, str], int, float]]:
        """(cell, checkpoint, P(best)) where a converged cell later fell below
        0.5; converged: P(best) >= 0.9 at ``settled`` checkpoints in a row (1:
        at any one, which also counts a model of ~200 examples that is
        confidently right by luck)."""
        out, streak, converged = [], {cell: 0 for cell in CELLS}, set()
        for at, cells in zip(self.checkpoints, self.p_best):
            for cell, p in cells.items():
                if cell in converged and p < COLLAPSED:
                    out.append((cell, at, p))
                streak[cell] = streak[cell] + 1 if p >= CONVERGED else 0
                if streak[cell] >= settled:
                    converged.add(cell)
        return out


def _input(seg: str, hour: float) -> DecisionInput:
    return DecisionInput((FeatureGroup("customer", {"segment": seg, "hour": hour}),),
                         tuple(SlotSpec(s) for s in SLOTS), CANDIDATES)


def p_best(policy: Policy, hours: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> dict[tuple[str, str], float]:
    """Each cell's probability of its planted best, given that the earlier
    slots took theirs, averaged over hours of the day: a deterministic read of
    the model. (The demo's table samples whole decisions instead, so an earlier
    slot exploring this slot's best costs a cell 1/trials there.)"""
    index = {c.id: i for i, c in enumerate(CANDIDATES)}
    out = {cell: 0.0 for cell in CELLS}
    for seg in SEGMENTS:
        for hour in hours:
            inp, taken = _input(seg, hour), set()
            for k, slot in enumerate(SLOTS):
                best = index[BEST[(seg, slot)]]
                allowed = [a for a in range(len(CANDIDATES)) if a not in taken]
                out[(seg, slot)] += dict(policy.slot_distribution(inp, k, allowed)).get(best, 0.0) / len(hours)
                taken.add(best)
    return out


def cell_scores(policy: Policy) -> dict[tuple[str, str], dict[str, float]]:
    """Each cell's predicted reward of every collection its slot may show
    when the earlier slots took their planted bests (hour 0.5)."""
    index = {c.id: i for i, c in enumerate(CANDIDATES)}
    out = {}
    for seg in SEGMENTS:
        inp, taken = _input(seg, 0.5), set()
        for k, slot in enumerate(SLOTS):
            allowed = [a for a in range(len(CANDIDATES)) if a not in taken]
            out[(seg, slot)] = {CANDIDATES[a].id: v for a, v in policy.scores(inp, k, allowed).items()}
            taken.add(index[BEST[(seg, slot)]])
    return out


def run_seed(seed: int, settings: LearningSettings, decisions: int = 3000, lag: int = 300,
             publish_every: int = 200, checkpoint_every: int = 250, trace: bool = False) -> SeedResult:
    """One seed of the demo world through the server's learning path."""
    audience, rng = Audience.make(seed), random.Random(seed + 1)
    with tempfile.TemporaryDirectory(prefix="stability-") as tmp:
        model = Path(tmp) / "model.vw"
        learner = LogLearner(settings)
        learner.save(model)
        serving = Policy(settings, model_path=model)
        pending: deque[JoinedEvent] = deque()
        learned, checkpoints, cells, scores = 0, [], [], []
        for i in range(1, decisions + 1):
            seg = rng.choice(SEGMENTS)
            inp = _input(seg, rng.randrange(24) / 23)
            event_id = f"s{seed}-{i}"
            choices = tuple(serving.decide(inp, event_id).choices)
            rewards = tuple(float(rng.random() < audience.click[(seg, c.slot_id, CANDIDATES[c.action].id)])
                            for c in choices)
            event = DecisionEvent(event_id, 1.7e9 + i, "default", "online", "0", inp, choices)
            pending.append(JoinedEvent(event, rewards, tuple(r > 0 for r in rewards), tuple((r,) for r in rewards)))
            while len(pending) > lag:
                learner.learn_line(dumps(joined_to_dsjson(pending.popleft())))
                learned += 1
                if learned % publish_every == 0:
                    learner.save(model)
                    serving.close()
                    serving = Policy(settings, model_path=model)
            if i % checkpoint_every == 0:
                checkpoints.append(i)
                cells.append(p_best(serving))
                if trace:
                    scores.append(cell_scores(serving))
        serving.close()
    return SeedResult(seed, tuple(checkpoints), tuple(cells), tuple(scores))


def print_falls(r: SeedResult) -> None:
    """Each fallen cell's P(best) and predicted rewards around its fall."""
    for cell, at, _ in r.fell(settled=2):
        i = r.checkpoints.index(at)
        print(f"seed {r.seed}: {cell[0]}/{cell[1]} (planted best {BEST[cell]}) fell at {at}", file=sys.stderr)
        for j in range(max(0, i - 2), min(len(r.checkpoints), i + 3)):
            ranked = sorted(r.scores[j][cell].items(), key=lambda kv: -kv[1])
            print(f"  {r.checkpoints[j]:5d}: P(best) {r.p_best[j][cell]:.2f}; predicted "
                  + ", ".join(f"{cid} {v:.3f}" for cid, v in ranked), file=sys.stderr)


def _seed_list(text: str) -> Sequence[int]:
    """``"40"`` -> 0..39; ``"13,14,39"`` -> those seeds."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a count nor a comma-separated list of seeds")
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"'{text}': seeds are non-negative integers")
    return range(seeds[0]) if len(seeds) == 1 and "," not in text else seeds


@dataclass(frozen=True)
class Summary:
    seeds: int
    collapse_rate: float
    fell_rate: float
    fell_strict_rate: float
    checkpoint_collapse_share: float
    mean_final: float
    worst_final: float


def summarise(results: list[SeedResult], warmup: int) -> Summary:
    late = [p for r in results for at, cells in zip(r.checkpoints, r.p_best) if at > warmup for p in cells.values()]
    finals = [p for r in results for p in r.final.values()]
    return Summary(
        seeds=len(results),
        collapse_rate=sum(min(r.final.values()) < COLLAPSED for r in results) / len(results),
        fell_rate=sum(bool(r.fell(settled=2)) for r in results) / len(results),
        fell_strict_rate=sum(bool(r.fell()) for r in results) / len(results),
        checkpoint_collapse_share=sum(p < COLLAPSED for p in late) / max(1, len(late)),
        mean_final=statistics.fmean(finals),
        worst_final=min(finals),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=_seed_list, default=range(20),
                        help="number of seeds N (0..N-1), or a comma-separated list (e.g. 13,14,39) [20]")
    parser.add_argument("--decisions", type=int, default=6000, help="decisions per seed (the demo makes 6000)")
    parser.add_argument("--lag", type=int, default=450, help="decisions between a decision and its learning")
    parser.add_argument("--publish-every", type=int, default=200, help="examples between published models")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="decisions between P(best) checkpoints")
    parser.add_argument("--warmup", type=int, default=2000, help="checkpoints after this count for the share")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the default learning rate")
    parser.add_argument("--settings", default="", help="override learning settings, as in a 'vw:' policy "
                                                        "(e.g. gamma_scale=100,learning_rate=0.05)")
    parser.add_argument("--trace", action="store_true",
                        help="print each fall: P(best) and the cell's predicted rewards around it")
    args = parser.parse_args(argv)
    settings = parse_settings(args.settings, "--settings") if args.settings else LearningSettings()
    if args.learning_rate is not None:
        settings = replace(settings, learning_rate=args.learning_rate)
    started = time.monotonic()
    results = []
    for seed in args.seeds:
        r = run_seed(seed, settings, args.decisions, args.lag, args.publish_every, args.checkpoint_every,
                     args.trace)
        results.append(r)
        if args.trace:
            print_falls(r)
        worst = min(r.final.items(), key=lambda kv: kv[1])
        print(f"seed {seed:2d}: worst final cell {worst[0]} {worst[1]:.3f}; fell: {len(r.fell(settled=2))} "
              f"(strict {len(r.fell())}) (cell, checkpoint) pairs", file=sys.stderr)
    s = summarise(results, args.warmup)
    print(f"{settings_label(settings)} seeds={s.seeds} decisions={args.decisions} lag={args.lag}: "
          f"collapse rate {s.collapse_rate:.0%}, fell after converging {s.fell_rate:.0%} "
          f"(strict {s.fell_strict_rate:.0%}), "
          f"checkpoint collapse share {s.checkpoint_collapse_share:.1%}, mean final P(best) {s.mean_final:.3f}, "
          f"worst final {s.worst_final:.3f} ({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
