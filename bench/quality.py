"""Learning quality: the engine against peers on the same simulated world.

``.venv/bin/python -m bench.quality [--decisions 100000] [--seeds 0,1,2]``

Every policy runs through :func:`simulator.runner.run` on the same scenario,
seeds and request stream (common random numbers for outcomes), and is scored
by its *expected* cumulative reward (the world's exact expectation of what it
placed) as a fraction of the oracle's on the same contexts. Peers:

* ``uniform``: uniformly random;
* ``greedy-ctr``: best observed click rate per slot x collection (epsilon 0.05);
* ``linucb`` / ``lints``: MABWiser's LinUCB and LinTS (disjoint linear models,
  one per collection), fed one-hot features (:class:`OneHot`), filling slots
  by descending score; a benchmark-only dependency (``pip install mabwiser``).

Ceilings (no learning, or no bandit feedback): ``segment-oracle`` /
``signal-oracle`` (:class:`SegmentOracle`) and ``engine-full-information``
(:class:`FullInformationEngine`), which split the gap to the oracle into
unobservable taste, the model, and learning from bandit feedback.

``--sweep`` adds engine explorers and settings (:data:`SWEEP`). Prints a
Markdown report on stdout (``--markdown FILE`` also writes it) and the raw
per-run table with ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from bandit.logformat.events import JoinedEvent
from bandit.assignment import best_assignment
from bandit.decision import DecisionInput, SlotChoice, fill_in_order
from bandit.features import DAYS_TO_EVENT_KNOTS, SlotSpec, days_to_event_features
from bandit.vwargs import LearningSettings
from simulator.specs import PolicySpec, parse_policy
from simulator.runner import run
from simulator.world import HOUR_BUCKETS, Customer, Scenario, World, load_scenario

SEASONS = ("none", "far", "6w", "3w", "2w", "1w", "just-passed", "past")
BUZZ = ("none", "quiet", "warm", "hot")


def _engine(name: str, **changes: Any) -> PolicySpec:
    """An engine PolicySpec: LearningSettings() with exploration/learning changes."""
    base = LearningSettings()
    explore = {k: v for k, v in changes.items() if k in base.exploration.__dataclass_fields__}
    learn = {k: v for k, v in changes.items() if k not in explore}
    return PolicySpec(name, replace(base, exploration=replace(base.exploration, **explore), **learn).validate())


# Explorers and settings tried besides the default (squarecb, gamma_scale 30, learning_rate 0.05;
# before 2026-12-02 gamma_scale 10, learning_rate 0.1).
SWEEP: dict[str, PolicySpec] = {
    "engine:epsilon=0.05": _engine("engine:epsilon=0.05", algorithm="epsilon", epsilon=0.05),
    "engine:epsilon=0.02": _engine("engine:epsilon=0.02", algorithm="epsilon", epsilon=0.02),
    "engine:squarecb,gamma=100": _engine("engine:squarecb,gamma=100", gamma_scale=100.0),
    "engine:squarecb,gamma=1000": _engine("engine:squarecb,gamma=1000", gamma_scale=1000.0),
    "engine:squarecb,lr=0.1": _engine("engine:squarecb,lr=0.1", learning_rate=0.1),
    "engine:squarecb,lr=1.0": _engine("engine:squarecb,lr=1.0", learning_rate=1.0),
    # The world drifts (seasons, viral spikes): a learning rate that does not decay.
    "engine:squarecb,power_t=0,lr=0.1": _engine("engine:squarecb,power_t=0,lr=0.1", power_t=0.0, learning_rate=0.1),
    # Collection identity x its calendar state (the default has no action x action interaction).
    "engine:+AA": _engine("engine:+AA", interactions=("CA", "SA", "CSA", "AA")),
}


# --- MABWiser peers ----------------------------------------------------------

class OneHot:
    """Context, slot and each collection's calendar state as one fixed vector:
    one-hot categories, numbers as they are: the same signals the engine gets
    (taste scores; per collection forecast, buzz score, days-to-event basis,
    or the old buckets). The collections' signals go into the shared context
    so a disjoint per-collection model can learn its own collection's season."""

    def __init__(self, scenario: Scenario):
        cats = ["none", *sorted(scenario.categories)]
        keys = [f"customer.segment={s.name}" for s in scenario.segments]
        keys += ["customer.status=new", "customer.status=returning"]
        keys += [f"session.intent={i.name}" for i in scenario.intents]
        keys += [f"session.category={c}" for c in cats]
        keys += [f"time.hour={h}" for h in HOUR_BUCKETS] + ["time.day=weekday", "time.day=weekend"]
        keys += [f"slot={s.id}" for s in scenario.slots] + ["slot.position"]
        signals = scenario.signals
        if "taste" in signals:
            keys += [f"taste.{t}" for t in sorted({t for c in scenario.collections for t in c.tags}
                                                  | {t for g in scenario.segments for t in g.tastes})]
        for c in scenario.collections:
            if c.kind == "seasonal":
                if "buckets" in signals:
                    keys += [f"{c.id}.season={b}" for b in SEASONS] + [f"{c.id}.proximity"]
                if "forecast" in signals:
                    keys.append(f"{c.id}.forecast")
                if "calendar" in signals:
                    keys += [f"{c.id}.{n}" for k in DAYS_TO_EVENT_KNOTS for n in days_to_event_features(k)]
            if c.kind == "viral":
                if "buckets" in signals:
                    keys += [f"{c.id}.buzz={b}" for b in BUZZ]
                if "buzz" in signals:
                    keys.append(f"{c.id}.buzz_score")
        self.index = {k: i for i, k in enumerate(keys)}

    @property
    def size(self) -> int:
        return len(self.index)

    def _set(self, x: np.ndarray, key: str, value: float | str) -> None:
        name = key if not isinstance(value, str) else f"{key}={value}"
        i = self.index.get(name)
        if i is not None:
            x[i] = 1.0 if isinstance(value, str) else float(value)

    def shared(self, inp: DecisionInput) -> np.ndarray:
        """The slot-independent part: context and every collection's calendar state."""
        x = np.zeros(self.size)
        for g in inp.context:
            for n, v in g.features.items():
                self._set(x, f"{g.name}.{n}", v)
        for c in inp.candidates:
            for g in c.groups:
                if g.name == "when":
                    for n, v in g.features.items():
                        self._set(x, f"{c.id}.{n}", v)
        return x

    def rows(self, inp: DecisionInput) -> np.ndarray:
        """One row per slot."""
        base = self.shared(inp)
        out = np.repeat(base[None, :], len(inp.slots), axis=0)
        for k, slot in enumerate(inp.slots):
            out[k, self.index[f"slot={slot.id}"]] = 1.0
            out[k, self.index["slot.position"]] = float(k)
        return out


class MabwiserPolicy:
    """A MABWiser contextual learner behind the simulator's decide/learn interface.
    Slots are filled in order by descending score (UCB, or a posterior draw
    for TS), never the same collection twice; propensity 1 (scores are
    deterministic given the model and MABWiser's seeded generator).

    Joined events are learned in batches of ``batch`` (one ``partial_fit``
    each): MABWiser deep-copies every arm's model per call, which otherwise
    costs ~5 ms per event. At 100k decisions a simulated reward window spans
    1,250 decisions, so a 50-event batch adds little lag."""

    def __init__(self, kind: str, world: World, seed: int, alpha: float = 1.0, l2_lambda: float = 1.0,
                 batch: int = 50):
        from mabwiser.mab import MAB, LearningPolicy

        make = {"linucb": LearningPolicy.LinUCB, "lints": LearningPolicy.LinTS}[kind]
        self.name = kind if alpha == 1.0 else f"{kind}(alpha={alpha:g})"
        self.arms = [c.id for c in world.scenario.collections]
        self.mab = MAB(arms=self.arms, learning_policy=make(alpha=alpha, l2_lambda=l2_lambda), seed=seed)
        self.encoder = OneHot(world.scenario)
        self.rng = np.random.default_rng(seed)
        self.fitted = False
        self.batch = batch
        self._rows: list[np.ndarray] = []
        self._arms: list[str] = []
        self._rewards: list[float] = []

    def _scores(self, rows: np.ndarray) -> list[dict[str, float]]:
        if not self.fitted:  # nothing learned yet: a seeded random order
            return [dict(zip(self.arms, self.rng.uniform(size=len(self.arms)))) for _ in rows]
        out = self.mab.predict_expectations(rows)
        return out if isinstance(out, list) else [out]

    def decide(self, inp: DecisionInput, event_id: str) -> list[SlotChoice]:
        scores = self._scores(self.encoder.rows(inp))
        def choose(k: int, slot: SlotSpec, allowed: list[int]) -> SlotChoice:
            best = max(allowed, key=lambda a: (scores[k][inp.candidates[a].id], -a))
            return SlotChoice(slot.id, best, 1.0, ((best, 1.0),), best)
        return fill_in_order(inp, choose).choices

    def learn(self, joined: JoinedEvent) -> None:
        d = joined.decision
        self._rows.append(self.encoder.rows(d.inp))
        self._arms += [d.inp.candidates[c.action].id for c in d.choices]
        self._rewards += list(joined.rewards)
        if len(self._rows) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        rows = np.concatenate(self._rows)
        if self.fitted:
            self.mab.partial_fit(self._arms, self._rewards, rows)
        else:
            self.mab.fit(self._arms, self._rewards, rows)
            self.fitted = True
        self._rows, self._arms, self._rewards = [], [], []

    def close(self) -> None:
        pass


def mabwiser(kind: str, alpha: float = 1.0) -> Callable[[World, int], MabwiserPolicy]:
    """A picklable factory for run()."""
    return partial(_make_mabwiser, kind, alpha)


def _make_mabwiser(kind: str, alpha: float, world: World, seed: int) -> MabwiserPolicy:
    return MabwiserPolicy(kind, world, seed, alpha=alpha)


class SegmentOracle:
    """A ceiling for any policy of the observable features: the oracle's
    assignment computed with each customer's hidden individual taste replaced
    by their segment's mean taste (``taste="segment"``) or by the taste scores
    the front-end sends (``taste="signal"``, the scenario's ``taste`` signal).
    It still knows the exact demand curves and trend levels, which the
    features only approximate."""

    def __init__(self, world: World, taste: str = "segment"):
        self.world = world
        self.taste = taste
        self.name = f"{taste}-oracle"

    def decide(self, inp: DecisionInput, event_id: str) -> list[SlotChoice]:
        r = self.world.current(event_id)
        c = r.customer
        known = (dict(c.taste_signal) if self.taste == "signal"
                 else {t: c.segment.tastes.get(t, 0.0) for t in self.world.tags})
        q = self.world.expected_matrix(replace(r, customer=Customer(c.id, c.segment, known)))
        chosen = best_assignment(inp, q)
        return [SlotChoice(slot.id, int(chosen[k]), 1.0, ((int(chosen[k]), 1.0),), int(chosen[k]))
                for k, slot in enumerate(inp.slots)]

    def learn(self, joined: JoinedEvent) -> None:
        pass

    def close(self) -> None:
        pass


def _segment_oracle(world: World, seed: int) -> SegmentOracle:
    return SegmentOracle(world)


def _signal_oracle(world: World, seed: int) -> SegmentOracle:
    return SegmentOracle(world, "signal")


class FullInformationEngine:
    """The model-class ceiling: the engine's own VW model (same features,
    interactions, settings) taught with full information and no delay. After
    each request it learns ``draws`` random assignments labelled with their
    *true expected* rewards (probability 1, as squarecb learns anyway), so it
    never has to explore and its labels carry no noise; it serves its greedy
    assignment. What it misses, no amount of exploration tuning recovers: that
    share of the gap is the model's (features, interactions, squared loss on
    a logistic world)."""

    def __init__(self, world: World, seed: int, settings: LearningSettings | None = None, draws: int = 4):
        from bandit.policy import Policy

        self.name = "engine-full-information"
        self.world = world
        self.policy = Policy(settings or LearningSettings())
        self.rng = np.random.default_rng(seed)
        self.draws = draws
        self._truth: dict[str, np.ndarray] = {}

    def decide(self, inp: DecisionInput, event_id: str) -> list[SlotChoice]:
        self._truth[event_id] = self.world.expected_matrix(self.world.current(event_id))
        score = np.full((len(inp.slots), len(inp.candidates)), -1e9)
        for k in range(len(inp.slots)):
            for a, v in self.policy.scores(inp, k, list(inp.allowed(k))).items():
                score[k, a] = v
        chosen = best_assignment(inp, score)
        return [SlotChoice(slot.id, int(chosen[k]), 1.0, ((int(chosen[k]), 1.0),), int(chosen[k]))
                for k, slot in enumerate(inp.slots)]

    def learn(self, joined: JoinedEvent) -> None:
        inp = joined.decision.inp
        q = self._truth.pop(joined.decision.event_id)
        for _ in range(self.draws):
            def pick(k: int, slot: SlotSpec, allowed: list[int]) -> SlotChoice:
                a = int(self.rng.choice(allowed))
                return SlotChoice(slot.id, a, 1.0, ((a, 1.0),), a)
            choices = fill_in_order(inp, pick).choices
            self.policy.learn(inp, choices, [float(q[k, c.action]) for k, c in enumerate(choices)])

    def close(self) -> None:
        self.policy.close()


def _full_information(world: World, seed: int) -> FullInformationEngine:
    return FullInformationEngine(world, seed)


# --- running -----------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    label: str
    policy: Any  # str | PolicySpec | factory
    seed: int


def _policy_names(text: str, known: dict[str, Any]) -> list[str]:
    """``--policies``, split on commas, with the commas inside a ``vw:`` spec or a
    SWEEP name kept: ``engine,vw:gamma_scale=1,gamma_exponent=0.8`` is two."""
    names: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        setting = "=" in part and ":" not in part
        if names and ((setting and names[-1].startswith("vw:")) or f"{names[-1]},{part}" in known):
            names[-1] += f",{part}"
        else:
            names.append(part)
    return names


def _known(known: dict[str, Any], name: str) -> Any:
    """A named policy, or a ``vw:KEY=VALUE,...`` engine spec as it is (labelled
    by itself; checked here, so a typo stops the run before any worker starts)."""
    if name in known:
        return known[name]
    if name.startswith("vw:"):
        try:
            parse_policy(name)
        except ValueError as err:
            raise SystemExit(f"--policies: {err}") from None
        return name
    raise SystemExit(f"--policies: unknown policy '{name}' (known: {', '.join(known)}, or vw:KEY=VALUE)")


def peers() -> dict[str, Any]:
    return {"engine": "vw", "engine-joint": "vw:fill=joint", "engine-in-order": "vw:fill=in_order",
            "uniform": "uniform", "greedy-ctr": "greedy-ctr",
            "linucb": mabwiser("linucb"), "lints": mabwiser("lints"), "segment-oracle": _segment_oracle,
            "signal-oracle": _signal_oracle, "engine-full-information": _full_information}


def run_cell(scenario: Scenario, decisions: int, cell: Cell) -> dict[str, Any]:
    started = time.perf_counter()
    result = run(scenario, cell.policy, cell.seed, decisions)
    s = result.summary
    records = result.records
    tail = records[records["decision"] >= 0.8 * decisions]
    return {"policy": cell.label, "seed": cell.seed, "decisions": decisions,
            "expected_reward": s["expected_reward"], "oracle_reward": s["oracle_reward"],
            "reward": s["reward"], "share_of_oracle": s["expected_reward"] / s["oracle_reward"],
            "last_20pct_share": float(tail["expected"].sum() / tail["oracle_expected"].sum()),
            "seconds": time.perf_counter() - started}


def run_all(scenario: Scenario, decisions: int, cells: list[Cell], workers: int,
            out: Path | None = None) -> pd.DataFrame:
    """Run every cell; with ``out``, each finished run is appended at once, so
    an interrupted benchmark keeps what it measured."""
    rows = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_cell, scenario, decisions, c): c for c in cells}
        for done in as_completed(futures):
            row = done.result()
            rows.append(row)
            if out is not None:
                pd.DataFrame([row]).to_csv(out, mode="a", header=len(rows) == 1, index=False)
            print(f"  {row['policy']:<28} seed {row['seed']}: {100 * row['share_of_oracle']:.1f} % of oracle "
                  f"({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def table(results: pd.DataFrame) -> str:
    """Markdown: mean and sd over seeds of the share of the oracle, best first."""
    g = results.groupby("policy")
    agg = pd.DataFrame({
        "seeds": g["seed"].nunique(),
        "share": 100 * g["share_of_oracle"].mean(), "sd": 100 * g["share_of_oracle"].std(ddof=1),
        "tail": 100 * g["last_20pct_share"].mean(),
        "per_decision": g["expected_reward"].mean() / g["decisions"].first(),
        "seconds": g["seconds"].mean(),
    }).sort_values("share", ascending=False)
    lines = ["| policy | seeds | cumulative reward, % of oracle (mean ± sd) | last 20 % of decisions, % of oracle "
             "| expected reward per decision | s per run |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in agg.iterrows():
        spread = f" ± {r['sd']:.1f}" if r["seeds"] > 1 else ""
        lines.append(f"| {name} | {int(r['seeds'])} | {r['share']:.1f}{spread} | {r['tail']:.1f} "
                     f"| {r['per_decision']:.4f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="seasonal-retail", help="built-in scenario or TOML path")
    parser.add_argument("--decisions", "-n", type=int, default=100_000, help="decisions per run")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    parser.add_argument("--policies", default="engine,uniform,greedy-ctr,linucb,lints",
                        help="comma-separated: engine, uniform, greedy-ctr, linucb, lints, segment-oracle, "
                             "any SWEEP name, or an engine spec such as vw:gamma_scale=10,gamma_exponent=0.6")
    parser.add_argument("--sweep", action="store_true", help="also run the engine settings in SWEEP")
    parser.add_argument("--sweep-only", action="store_true", help="only the engine default and SWEEP")
    parser.add_argument("--out", type=Path, help="write the per-run table here (.csv), a row per finished run")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown report here")
    args = parser.parse_args(argv)
    scenario = load_scenario(args.scenario)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    known = {**peers(), **SWEEP}
    chosen = {"engine": "vw"} if args.sweep_only else {p: _known(known, p) for p in _policy_names(args.policies, known)}
    if args.sweep or args.sweep_only:
        chosen.update(SWEEP)
    cells = [Cell(label, policy, seed) for seed in seeds for label, policy in chosen.items()]
    print(f"{len(cells)} runs of {args.decisions} decisions on {scenario.name}, {args.workers} workers",
          file=sys.stderr, flush=True)
    started = time.perf_counter()
    if args.out:
        args.out.unlink(missing_ok=True)
    results = run_all(scenario, args.decisions, cells, args.workers, args.out)
    wall = time.perf_counter() - started
    report = (f"{scenario.name}, {args.decisions} decisions per run, seeds {args.seeds}; "
              f"{len(cells)} runs in {wall / 60:.1f} min on {args.workers} workers\n\n{table(results)}\n")
    print(report)
    if args.markdown:
        args.markdown.write_text(report, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
