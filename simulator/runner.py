"""The in-process simulation loop.

For each request the world emits, the policy decides, the world samples what
each placement leads to (rewards arriving later on the simulated clock), and a
:class:`bandit.joiner.Joiner`, the server's own, joins rewards to decisions
within its window. Each joined event is learned from at once (the server
learns on join and publishes versions; learning immediately approximates it)
and, when asked, written to the joined DSJSON log with
:func:`bandit.logformat.events.joined_to_dsjson`, so offline replay reads simulated
traffic exactly as it reads production logs.

Every decision is recorded per slot with its expected reward and the
oracle's, so regret is exact rather than estimated.

``target="host:port"`` runs the ``engine`` on a live server instead
(:mod:`simulator.remote`): the same loop, the server decides and learns, the
loop forwards rewards. ``true_value_of`` values other policies on the run's
own joined events as they are logged (see :class:`TargetValuer`), so an
off-policy estimate of them from the run's log can be checked against the
truth.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from bandit.logformat.events import DecisionEvent, JoinedEvent, dumps, joined_to_dsjson
from bandit.joiner import ExpiredEvent, Joiner
from bandit.assignment import best_assignment
from bandit.decision import DecisionInput
from simulator.policies import SimPolicy, make_policy
from simulator.specs import PolicySpec, parse_policy
from simulator.world import Request, Scenario, World, load_scenario

if TYPE_CHECKING:  # the gRPC path is imported only when used
    from simulator.remote import RemoteOptions

SURFACE = "simulator"
# Target policy for true_value: a function of the decision input, or one entry
# per context; an entry is per slot either [(candidate, prob), ...] or a row of
# probabilities over the candidates.
Distributions = Sequence[Sequence[Sequence[float]] | Sequence[Sequence[tuple[int, float]]] | np.ndarray]
Target = Callable[[DecisionInput], Sequence[Sequence[tuple[int, float]]]] | Distributions
# A policy the caller builds (benchmarks' peers): (world, seed) -> SimPolicy.
PolicyFactory = Callable[[World, int], SimPolicy]
REMOTE_POLICIES = ("vw", "engine")  # the server runs its engine with its own settings


@dataclass
class RunResult:
    """One policy on one scenario and seed."""

    summary: dict[str, Any]
    records: pd.DataFrame  # one row per (decision, slot)
    join_stats: dict[str, int]
    requests: list[Request] = field(default_factory=list)  # kept only when asked
    true_values: dict[str, dict[str, Any]] = field(default_factory=dict)  # target name -> true_value-like dict



def remote_policy_check(policy: str | PolicySpec) -> PolicySpec:
    """Only the engine runs on a server; every other policy lives in-process."""
    spec = parse_policy(policy)
    if spec.name not in REMOTE_POLICIES:
        raise ValueError(
            f"policy '{spec.name}' cannot run against a server: --target drives the server's engine, whose "
            "learning settings are the server's configuration ([surfaces.<name>.learning]); use --policy vw "
            "with --target, and run the other policies in-process (without --target)")
    return spec


def run(scenario: Scenario | str | Path, policy: str | PolicySpec | PolicyFactory, seed: int = 0,
        decisions: int = 5000, log_path: Path | str | None = None, progress: Callable[[int], None] | None = None,
        keep_requests: bool = False, target: str | RemoteOptions | None = None,
        true_value_of: Sequence[str | PolicySpec] = ()) -> RunResult:
    """Run one policy for ``decisions`` requests and measure it against the truth.

    ``target`` (host:port or :class:`RemoteOptions`) runs the engine on that
    live server; ``true_value_of`` values those policies on the run's events."""
    scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    world = World(scenario, seed, decisions)
    if target is not None:
        from simulator.remote import GrpcEnginePolicy, RemoteOptions

        remote_policy_check(policy)
        options = target if isinstance(target, RemoteOptions) else RemoteOptions(str(target))
        sim: SimPolicy = GrpcEnginePolicy(world, options)
    elif callable(policy) and not isinstance(policy, (str, PolicySpec)):
        sim = policy(world, seed)
    else:
        sim = make_policy(parse_policy(policy), world, seed)
    name = sim.name
    rw = scenario.reward
    joiner = Joiner(rw.window_hours * 3600.0, rw.aggregation, rw.default)
    valuers = [TargetValuer(parse_policy(t), world, seed) for t in true_value_of]
    loop = _Loop(world, sim, joiner, Path(log_path) if log_path else None, valuers)
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
        for v in valuers:
            v.close()
    records = pd.DataFrame(loop.rows)
    records.insert(0, "policy", name)
    records.insert(1, "scenario", scenario.name)
    records.insert(2, "seed", seed)
    summary = summarize(records, name, scenario.name, seed, decisions)
    summary["expired_rewards"] = loop.expired
    if target is not None:
        summary.update(sim.summary(decisions))
    true_values = {v.name: v.result() for v in valuers}
    for target_name, tv in true_values.items():
        summary[f"true_value[{target_name}]"] = tv["value"]
    summary["seconds"] = time.perf_counter() - started
    return RunResult(summary, records, asdict(joiner.stats), kept, true_values)


class _Loop:
    """The event loop's state: pending reward arrivals, records, the log."""

    def __init__(self, world: World, policy: SimPolicy, joiner: Joiner, log_path: Path | None,
                 valuers: Sequence["TargetValuer"] = ()):
        self.world, self.policy, self.joiner = world, policy, joiner
        self.valuers = list(valuers)
        self.q_of: dict[str, np.ndarray] = {}  # pending event id -> expected matrix (only with valuers)
        self.forward = getattr(policy, "reward", None)  # a remote policy hears rewards as they arrive
        self.pace = getattr(policy, "wait_until", None)  # and may hold the simulated clock to the wall
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
        if self.pace is not None and now != float("inf"):
            self.pace(now)
        while self.arrivals and self.arrivals[0][0] <= now:
            ts, _, event_id, slot_id, value = heapq.heappop(self.arrivals)
            self._learn(self.joiner.close_due(ts))
            try:
                self.joiner.add_reward(event_id, slot_id, value, ts)
            except ExpiredEvent:
                self.expired += 1
                continue
            if self.forward is not None:
                self.forward(event_id, slot_id, value, ts)
        self._learn(self.joiner.close_due(now))

    def decide(self, r: Request) -> None:
        choices = self.policy.decide(r.inp, r.event_id)
        q = self.world.expected_matrix(r)
        best = best_assignment(r.inp, q)
        version = getattr(self.policy, "model_version", "") or self.policy.name
        self.joiner.add_decision(DecisionEvent(r.event_id, r.timestamp, SURFACE, "online",
                                               version, r.inp, tuple(choices)))
        self.row_of[r.event_id] = len(self.rows)
        if self.valuers:
            self.q_of[r.event_id] = q
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
                # what the policy's own top pick for the slot would have earned: expected minus this
                # is the price of exploring
                "top_expected": float(q[k, choice.model_top]) if choice.model_top >= 0 else float("nan"),
                "oracle_collection": r.collections[best[k]].id,
            })

    def finish(self) -> None:
        self.deliver(float("inf"))
        self._learn(self.joiner.close_all())

    def _learn(self, joined: list[JoinedEvent]) -> None:
        for j in joined:
            if self.valuers:
                q = self.q_of.pop(j.decision.event_id)
                for valuer in self.valuers:
                    valuer.add(j, q)
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
    estimators evaluate: a function such as ``EnginePolicy.distributions``, or one
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


class TargetValuer:
    """A target policy's true value on a run's joined events, in log order.

    ``value`` is what ``placement replay`` estimates from the run's log: per
    event, sum over slots of sum_a pi(a | x, logged a_<k) q(x, k, a), the
    target conditioned on the collections the *logged* earlier slots took; a
    learning target (engine, greedy-ctr) is valued on each event before it
    learns from it (progressive validation). ``value_marginal`` values each
    slot over all its candidates (runner.true_value's form), and for the
    oracle its own joint assignment."""

    def __init__(self, spec: PolicySpec, world: World, seed: int):
        self.name = spec.name
        self.world = world
        self.policy = make_policy(spec, world, seed)
        self.totals: list[float] = []
        self.marginal: list[float] = []
        self.per_slot: dict[str, list[float]] = {}

    def add(self, joined: JoinedEvent, q: np.ndarray) -> None:
        inp = joined.decision.inp
        choices = joined.decision.choices
        actions = [c.action for c in choices]
        total = marginal = 0.0
        joint = best_assignment(inp, q) if self.name == "oracle" else None
        for (k, allowed), choice in zip(inp.walk(actions), choices):
            if joint is not None:  # the oracle's pick for slot k with the logged earlier slots fixed
                v = float(q[k, best_assignment(inp, q, first=k, taken=actions[:k])[0]])
                m = float(q[k, joint[k]])
            else:
                v = float(_as_row(self.policy.distribution(inp, k, allowed), q.shape[1]) @ q[k])
                m = float(_as_row(self.policy.distribution(inp, k, list(inp.allowed(k))), q.shape[1]) @ q[k])
            self.per_slot.setdefault(choice.slot_id, []).append(v)
            total, marginal = total + v, marginal + m
        self.totals.append(total)
        self.marginal.append(marginal)
        self.policy.learn(joined)

    def result(self) -> dict[str, Any]:
        return {"value": float(np.mean(self.totals)), "value_marginal": float(np.mean(self.marginal)),
                "n": len(self.totals), "per_slot": {s: float(np.mean(v)) for s, v in self.per_slot.items()}}

    def close(self) -> None:
        self.policy.close()


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
