"""The in-process simulation loop.

For each request the world emits, the policy decides, the world samples what
each placement leads to (rewards arriving later on the simulated clock), and a
:class:`bandit.joiner.Joiner`, the server's own, joins rewards to decisions
within its window. Each joined event is learned from at once (the server
learns on join and publishes versions; learning immediately approximates it)
and, when asked, written to the joined DSJSON log with
:func:`bandit.events.joined_to_dsjson`, so offline replay reads simulated
traffic exactly as it reads production logs.

Every decision is recorded per slot with its expected reward and the
oracle's, so regret is exact rather than estimated.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from bandit.events import DecisionEvent, JoinedEvent, dumps, joined_to_dsjson
from bandit.joiner import ExpiredEvent, Joiner
from bandit.policy import DecisionInput
from simulator.policies import PolicySpec, SimPolicy, make_policy, parse_policy
from simulator.world import Request, Scenario, World, load_scenario

SURFACE = "simulator"
# Target policy for true_value: a function of the decision input, or one entry
# per context; an entry is per slot either [(candidate, prob), ...] or a row of
# probabilities over the candidates.
Distributions = Sequence[Sequence[Sequence[float]] | Sequence[Sequence[tuple[int, float]]] | np.ndarray]
Target = Callable[[DecisionInput], Sequence[Sequence[tuple[int, float]]]] | Distributions


@dataclass
class RunResult:
    """One policy on one scenario and seed."""

    summary: dict[str, Any]
    records: pd.DataFrame  # one row per (decision, slot)
    join_stats: dict[str, int]
    requests: list[Request] = field(default_factory=list)  # kept only when asked


def oracle_assignment(q: np.ndarray) -> np.ndarray:
    """Column (candidate) per slot maximising the summed expected reward."""
    rows, cols = linear_sum_assignment(q, maximize=True)
    out = np.empty(q.shape[0], dtype=int)
    out[rows] = cols
    return out


def run(scenario: Scenario | str | Path, policy: str | PolicySpec, seed: int = 0, decisions: int = 5000,
        log_path: Path | str | None = None, progress: Callable[[int], None] | None = None,
        keep_requests: bool = False) -> RunResult:
    """Run one policy for ``decisions`` requests and measure it against the truth."""
    scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    spec = parse_policy(policy)
    world = World(scenario, seed, decisions)
    sim = make_policy(spec, world, seed)
    rw = scenario.reward
    joiner = Joiner(rw.window_hours * 3600.0, rw.aggregation, rw.default)
    loop = _Loop(world, sim, joiner, Path(log_path) if log_path else None)
    started = time.perf_counter()
    kept: list[Request] = []
    try:
        for request in world.requests():
            loop.deliver(request.timestamp)
            loop.decide(request)
            if keep_requests:
                kept.append(request)
            if progress is not None:
                progress(1)
        loop.finish()
    finally:
        loop.close()
        sim.close()
    records = pd.DataFrame(loop.rows)
    records.insert(0, "policy", spec.name)
    records.insert(1, "scenario", scenario.name)
    records.insert(2, "seed", seed)
    summary = summarize(records, spec.name, scenario.name, seed, decisions)
    summary["expired_rewards"] = loop.expired
    summary["seconds"] = time.perf_counter() - started
    return RunResult(summary, records, asdict(joiner.stats), kept)


class _Loop:
    """The event loop's state: pending reward arrivals, records, the log."""

    def __init__(self, world: World, policy: SimPolicy, joiner: Joiner, log_path: Path | None):
        self.world, self.policy, self.joiner = world, policy, joiner
        self.arrivals: list[tuple[float, int, str, str, float]] = []
        self.rows: list[dict[str, Any]] = []
        self.row_of: dict[str, int] = {}  # event id -> index of its first row
        self.expired = 0
        self._seq = 0
        self.log = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log = open(log_path, "w", encoding="utf-8")

    def deliver(self, now: float) -> None:
        """Deliver rewards due by ``now`` in time order, closing windows as the clock passes them."""
        while self.arrivals and self.arrivals[0][0] <= now:
            ts, _, event_id, slot_id, value = heapq.heappop(self.arrivals)
            self._learn(self.joiner.close_due(ts))
            try:
                self.joiner.add_reward(event_id, slot_id, value, ts)
            except ExpiredEvent:
                self.expired += 1
        self._learn(self.joiner.close_due(now))

    def decide(self, r: Request) -> None:
        choices = self.policy.decide(r.inp, r.event_id)
        q = self.world.expected_matrix(r)
        best = oracle_assignment(q)
        self.joiner.add_decision(DecisionEvent(r.event_id, r.timestamp, SURFACE, "online",
                                               self.policy.name, r.inp, tuple(choices)))
        self.row_of[r.event_id] = len(self.rows)
        for k, choice in enumerate(choices):
            outcome = self.world.outcome(r, k, choice.action)
            for ts, value in outcome.rewards:
                self._seq += 1
                heapq.heappush(self.arrivals, (ts, self._seq, r.event_id, choice.slot_id, value))
            coll = r.collections[choice.action]
            self.rows.append({
                "decision": r.index, "event_id": r.event_id, "timestamp": r.timestamp, "day": r.day,
                "slot": choice.slot_id, "position": k, "collection": coll.id, "kind": coll.kind,
                "in_window": self.world.in_window(coll.id, r.day), "propensity": choice.probability,
                "reward": np.nan, "observed": False, "clicked": outcome.clicked, "purchased": outcome.purchased,
                "expected": float(q[k, choice.action]), "oracle_expected": float(q[k, best[k]]),
                "oracle_collection": r.collections[best[k]].id,
            })

    def finish(self) -> None:
        self.deliver(float("inf"))
        self._learn(self.joiner.close_all())

    def _learn(self, joined: list[JoinedEvent]) -> None:
        for j in joined:
            self.policy.learn(j)
            first = self.row_of.pop(j.decision.event_id)
            for k, (reward, seen) in enumerate(zip(j.rewards, j.observed)):
                self.rows[first + k]["reward"] = reward
                self.rows[first + k]["observed"] = seen
            if self.log is not None:
                self.log.write(dumps(joined_to_dsjson(j)) + "\n")

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def summarize(records: pd.DataFrame, policy: str, scenario: str, seed: int, decisions: int) -> dict[str, Any]:
    """One row of results: cumulative reward, regret vs oracle, per-slot CTR."""
    out: dict[str, Any] = {
        "policy": policy, "scenario": scenario, "seed": seed, "decisions": decisions,
        "reward": float(records["reward"].sum()),
        "expected_reward": float(records["expected"].sum()),
        "oracle_reward": float(records["oracle_expected"].sum()),
    }
    out["regret"] = out["oracle_reward"] - out["expected_reward"]
    out["reward_per_decision"] = out["reward"] / decisions
    out["clicks"] = int(records["clicked"].sum())
    out["purchases"] = int(records["purchased"].sum())
    for slot, group in records.groupby("slot", sort=True):
        out[f"ctr_{slot}"] = float(group["clicked"].mean())
    return out


def contexts(scenario: Scenario | str | Path, seed: int, decisions: int) -> tuple[World, list[Request]]:
    """The world and its request stream, regenerated exactly (no policy needed)."""
    world = World(scenario, seed, decisions)
    return world, list(world.requests())


def true_value(world: World, requests: Sequence[Request], target: Target) -> dict[str, Any]:
    """A target policy's true value on these contexts: per decision, the sum
    over slots of sum_a pi(a | x, slot) q(x, slot, a), averaged; also per slot.

    ``target`` gives per-slot (marginal) distributions, the form off-policy
    estimators evaluate: a function such as ``Policy.distributions``, or one
    entry per request."""
    totals, per_slot = [], {}
    for i, r in enumerate(requests):
        dists = target(r.inp) if callable(target) else target[i]
        q = world.expected_matrix(r)
        value = 0.0
        for k, slot in enumerate(r.slots):
            v = float(_as_row(dists[k], q.shape[1]) @ q[k])
            per_slot.setdefault(slot.id, []).append(v)
            value += v
        totals.append(value)
    return {"value": float(np.mean(totals)), "n": len(totals),
            "per_slot": {s: float(np.mean(v)) for s, v in per_slot.items()}}


def _as_row(dist: Any, n: int) -> np.ndarray:
    """A per-slot distribution as a probability row over n candidates:
    a 1-D row as is, or (candidate, probability) pairs scattered into one."""
    arr = np.asarray(dist, dtype=float)
    if arr.ndim == 1 and arr.shape == (n,):
        return arr
    if arr.ndim == 2 and arr.shape[1] == 2:
        row = np.zeros(n)
        np.add.at(row, arr[:, 0].astype(int), arr[:, 1])
        return row
    raise ValueError(f"distribution has shape {arr.shape}: expected ({n},) or (candidate, probability) pairs")
