"""Offline evaluation of target policies on the engine's joined logs.

The pipeline, each step a function so tests and other tools can use parts:

1. :func:`load_log` reads joined DSJSON logs (ccb or cb layout, ``.gz`` too) in
   time order into :class:`ReplayLog` arrays per slot: reward, logged action,
   logging propensity, candidate mask (the collections slot k could show given
   the *logged* earlier slots -- what the propensity is conditioned on).
2. :func:`target_distributions` replays a target over the log in time order:
   for each event it first asks the target for pi(. | x, logged a_<k) per
   slot, then lets it learn from the event (progressive validation), so a
   learning target is only valued on events it has not yet seen.
   :func:`run_targets` does that for many targets in parallel processes.
3. :func:`fit_reward_model` cross-fits one ridge reward model over context,
   slot and collection features (``bandit.ope.reward_model``) for DM and the
   DR family, and measures its held-out quality.
4. :func:`evaluate_policy` runs the estimators of :mod:`bandit.estimators` per
   slot and for the page (sum over slots), the slate estimators on the page,
   intervals from :mod:`bandit.intervals` and diagnostics; a refusal is kept as
   ``{"refused": reason, "detail": ...}``, never turned into a number.
5. :func:`run_replay` ties it together (plus ``--search`` and importance) and
   returns one JSON-ready dict; :mod:`simulator.replay_report` prints and
   plots it.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from bandit.estimators import (
    SLATE_ESTIMATORS,
    EstimationRefused,
    Estimate,
    OffPolicyEstimator,
    RefusalReason,
    diagnose,
    importance_weights,
    make_estimator,
    page_estimate,
    per_slot_estimate,
)
from bandit.events import JoinedEvent, LogFormatError, read_joined
from bandit.ope.reward_model import RewardModelFit
from bandit.ope.reward_model import fit_reward_model as ope_reward_model
from bandit.intervals import (
    Interval,
    bootstrap_interval,
    clipped,
    empirical_bernstein_interval,
    ipw_bernstein_interval,
    no_success_interval,
    normal_interval,
)
from bandit.vwargs import LearningSettings
from simulator.targets import ExternalProbabilities, Target, TargetError, TargetSpec, make_target, parse_policy

ESTIMATORS = ("dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os")
SLATE = ("iips", "pi", "sips")
INTERVALS = ("normal", "bootstrap", "bernstein")
# Switch-DR: rounds with weight above this fall back to DM. DRos: lambda of the
# optimistic shrinkage w*l/(w^2+l), which caps each effective weight at sqrt(l)/2.
ESTIMATOR_PARAMS: dict[str, dict[str, float]] = {"switch-dr": {"lambda_": 20.0}, "dr-os": {"lambda_": 100.0}}
_SUM_TOL = 1e-6

Progress = Callable[[int], None]


# --------------------------------------------------------------------------- the log


@dataclass
class ReplayLog:
    """A joined log as per-slot arrays, events in time order.

    Events with fewer than K slots are padded: reward 0, action 0, propensity
    1, mask only action 0, and every target is one-hot there -- weight 1 and
    reward 0, so a padded slot adds exactly nothing to a page value.
    """

    events: list[JoinedEvent]
    allowed: list[list[list[int]]]  # [event][slot] candidate indices available
    reward: np.ndarray  # (n, K)
    action: np.ndarray  # (n, K) int
    pscore: np.ndarray  # (n, K) NaN where missing
    mask: np.ndarray  # (n, K, A) bool
    present: np.ndarray  # (n, K) bool
    logged_dist: np.ndarray  # (n, K, A) the logging policy's ranking; NaN where unknown (chosen_only)
    slot_labels: list[str]
    sources: list[str] = field(default_factory=list)
    # (n,) events whose log carries only the chosen actions' propensities
    chosen_only: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def n(self) -> int:
        return len(self.events)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.mask.shape  # type: ignore[return-value]

    @classmethod
    def from_events(cls, events: Iterable[JoinedEvent], sources: Sequence[str] = ()) -> "ReplayLog":
        """Arrays from joined events (sorted by decision time, stable)."""
        events = sorted(events, key=lambda e: e.decision.timestamp)
        if not events:
            raise LogFormatError("the log has no events")
        n = len(events)
        k_max = max(len(e.decision.choices) for e in events)
        a_max = max(len(e.decision.inp.candidates) for e in events)
        if k_max == 0 or a_max == 0:
            raise LogFormatError("the log's events have no slots or no candidates")
        reward, pscore = np.zeros((n, k_max)), np.ones((n, k_max))
        action = np.zeros((n, k_max), dtype=np.int64)
        mask = np.zeros((n, k_max, a_max), dtype=bool)
        mask[:, :, 0] = True
        present = np.zeros((n, k_max), dtype=bool)
        logged = np.zeros((n, k_max, a_max))
        logged[:, :, 0] = 1.0
        allowed_all: list[list[list[int]]] = []
        slot_ids: list[Counter[str]] = [Counter() for _ in range(k_max)]
        for i, joined in enumerate(events):
            allowed_all.append(_fill_event(i, joined, reward, action, pscore, mask, present, logged))
            for k, choice in enumerate(joined.decision.choices):
                slot_ids[k][choice.slot_id] += 1
        labels = [c.most_common(1)[0][0] if len(c) == 1 else f"#{k}" for k, c in enumerate(slot_ids)]
        chosen_only = np.array([e.decision.chosen_only for e in events], dtype=bool)
        return cls(events, allowed_all, reward, action, pscore, mask, present, logged, labels, list(sources),
                   chosen_only)


def _fill_event(i: int, joined: JoinedEvent, reward: np.ndarray, action: np.ndarray, pscore: np.ndarray,
                mask: np.ndarray, present: np.ndarray, logged: np.ndarray) -> list[list[int]]:
    d = joined.decision
    n_cand = len(d.inp.candidates)
    used: set[int] = set()
    allowed_event = []
    for k, choice in enumerate(d.choices):
        if not 0 <= choice.action < n_cand:
            raise LogFormatError(f"event {d.event_id}: slot {choice.slot_id} logged action {choice.action} "
                                 f"but the event has {n_cand} candidates")
        eligible = d.inp.allowed(k) if k < len(d.inp.slots) else range(n_cand)
        allowed = [a for a in eligible if a not in used]
        if choice.action not in allowed:  # the logger could choose it, so it was available
            allowed.append(choice.action)
        used.add(choice.action)
        allowed_event.append(allowed)
        present[i, k] = True
        reward[i, k] = joined.rewards[k]
        action[i, k] = choice.action
        pscore[i, k] = choice.probability if choice.probability is not None else math.nan
        mask[i, k, 0] = False
        mask[i, k, allowed] = True
        if d.chosen_only:  # the logging distribution is unknown beyond the chosen action
            logged[i, k] = math.nan
            continue
        logged[i, k] = _row(choice.ranking, allowed, logged.shape[-1], f"event {d.event_id} slot {choice.slot_id}",
                            lenient=True)
    return allowed_event


def _row(dist: Iterable[tuple[int, float]], allowed: list[int], width: int, where: str,
         lenient: bool = False) -> np.ndarray:
    """A distribution as a dense row restricted to ``allowed``; renormalised only
    when off by more than float rounding (so the logged ranking stays exact)."""
    row = np.zeros(width)
    allowed_set = set(allowed)
    for a, p in dist:
        if a in allowed_set and p > 0 and math.isfinite(p):
            row[a] += p
    total = row.sum()
    if total <= 0:
        if lenient:  # an unusable logged ranking: uniform (only diagnostics use it)
            row[allowed] = 1.0 / len(allowed)
            return row
        raise TargetError(f"{where}: the target puts no probability on any available collection")
    if abs(total - 1.0) > _SUM_TOL:
        row /= total
    return row


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given; a directory means its ``*.dsjson`` / ``*.dsjson.gz`` / ``*.json(.gz)`` files."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and
                           any(p.name.endswith(s) for s in (".dsjson", ".dsjson.gz", ".json", ".json.gz", ".jsonl")))
            if not found:
                raise LogFormatError(f"{path}: directory has no .dsjson/.json(.gz) files")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise LogFormatError(f"{path}: no such file or directory")
    return out


def load_log(paths: Sequence[Path]) -> ReplayLog:
    files = expand_paths(paths)
    return ReplayLog.from_events(read_joined(files), [str(p) for p in files])


# --------------------------------------------------------------------------- targets over the log


def target_distributions(log: ReplayLog, target: Target, events: Sequence[JoinedEvent] | None = None,
                         progress: Progress | None = None) -> np.ndarray:
    """pi(. | x_i, logged a_<k) as (n, K, A), valuing each event *before* the
    target learns from it. ``events`` may replace the log's (same decisions,
    transformed features, e.g. an ablated group)."""
    events = log.events if events is None else events
    n, k_max, a_max = log.shape
    dist = np.zeros((n, k_max, a_max))
    dist[:, :, 0] = 1.0  # padded slots: one-hot where the log is padded
    for i, joined in enumerate(events):
        for k, allowed in enumerate(log.allowed[i]):
            where = f"{target.name}: event {joined.decision.event_id} slot {joined.decision.choices[k].slot_id}"
            dist[i, k] = _row(target.distribution(joined, k, allowed), allowed, a_max, where)
        target.learn(joined)
        if progress and (i + 1) % 100 == 0:
            progress(100)
    if progress:
        progress(n % 100)
    return dist


@dataclass(frozen=True)
class ProgressiveTask:
    """One pass of a target over the log (picklable, for worker processes)."""

    spec: TargetSpec
    ablate: str | None = None  # a feature group to remove (see simulator.importance)


_WORKER_LOG: ReplayLog | None = None


def _init_worker(log: ReplayLog) -> None:
    global _WORKER_LOG
    _WORKER_LOG = log


def _run_task(task: ProgressiveTask, log: ReplayLog | None = None, progress: Progress | None = None) -> np.ndarray:
    log = log or _WORKER_LOG
    assert log is not None, "worker not initialised"
    events = log.events
    if task.ablate is not None:
        from simulator.importance import ablate_event

        events = [ablate_event(e, task.ablate) for e in events]
    target = make_target(task.spec)
    try:
        return target_distributions(log, target, events, progress)
    finally:
        target.close()


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@dataclass(frozen=True)
class Engine:
    """Where VW targets fan out: a local process pool (default) or Ray.

    ``ray=True`` starts a local Ray with ``workers`` CPUs (or uses a Ray this
    process already initialised); ``ray_address`` joins an existing cluster,
    which then needs this package and VW (``bandit`` and ``simulator`` are
    shipped with the job). A Ray started here is shut down afterwards. Every
    VW task gets one CPU; the same targets and log give the same numbers on
    either engine (each task is a deterministic pass over the same events)."""

    ray: bool = False
    ray_address: str | None = None

    @property
    def uses_ray(self) -> bool:
        return self.ray or bool(self.ray_address)


_ENGINE: ContextVar[Engine] = ContextVar("replay_engine", default=Engine())


@contextmanager
def use_engine(engine: Engine) -> Iterator[None]:
    """Make ``engine`` the default of every :func:`run_targets` call in this
    context (so ``--search`` and ``--importance`` fan out on it too)."""
    token = _ENGINE.set(engine)
    try:
        yield
    finally:
        _ENGINE.reset(token)


def run_targets(log: ReplayLog, tasks: Sequence[ProgressiveTask], workers: int | None = None,
                progress: Progress | None = None, *, ray: bool = False,
                ray_address: str | None = None) -> list[np.ndarray]:
    """Distributions for every task, in order. VW tasks (two or more) run in a
    process pool -- spawned, since the caller may hold threads (a gRPC
    server); cheap targets, a single VW task or ``workers=1`` run here.
    With ``ray``/``ray_address`` (when neither is given: the engine of the
    context, see :func:`use_engine`) every VW task runs on Ray instead, one
    CPU each."""
    engine = Engine(ray, ray_address) if ray or ray_address else _ENGINE.get()
    workers = workers or default_workers()
    heavy = [i for i, t in enumerate(tasks) if t.spec.kind in ("vw", "model")]
    if engine.uses_ray and heavy:
        return _run_targets_ray(log, tasks, heavy, workers, engine.ray_address, progress)
    pooled = heavy if workers > 1 and len(heavy) > 1 else []
    out: dict[int, np.ndarray] = {}
    futures = {}
    pool = None
    if pooled:
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(min(workers, len(pooled)), mp_context=ctx,
                                   initializer=_init_worker, initargs=(log,))
        futures = {i: pool.submit(_run_task, tasks[i]) for i in pooled}
    try:
        for i, task in enumerate(tasks):
            if i not in futures:
                out[i] = _run_task(task, log, progress)
        for i, future in futures.items():
            out[i] = future.result()
            if progress:
                progress(log.n)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return [out[i] for i in range(len(tasks))]


def _run_targets_ray(log: ReplayLog, tasks: Sequence[ProgressiveTask], heavy: list[int], workers: int,
                     address: str | None, progress: Progress | None) -> list[np.ndarray]:
    """VW tasks as Ray tasks (the log put in the object store once); cheap
    targets run here meanwhile."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("Ray is not installed: pip install 'placement-engine[ray]'") from None
    started = not ray.is_initialized()
    if started:
        _ray_init(ray, address, workers)
    try:
        remote = ray.remote(num_cpus=1)(_run_task)
        log_ref = ray.put(log)
        pending = {remote.remote(tasks[i], log_ref): i for i in heavy}
        out: dict[int, np.ndarray] = {}
        for i, task in enumerate(tasks):
            if i not in heavy:
                out[i] = _run_task(task, log, progress)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                out[pending.pop(ref)] = ray.get(ref)
                if progress:
                    progress(log.n)
        return [out[i] for i in range(len(tasks))]
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------- reward model


def reward_model(log: ReplayLog, seed: int = 0, n_folds: int = 5) -> np.ndarray:
    """Cross-fitted q_hat(x_i, k, a) as (n, K, A): :func:`fit_reward_model`'s ``q``."""
    return fit_reward_model(log, seed, n_folds).q


def fit_reward_model(log: ReplayLog, seed: int = 0, n_folds: int = 5) -> RewardModelFit:
    """The one reward model of :mod:`bandit.ope.reward_model` (a single ridge
    regression over context, slot and collection features and their
    interactions, cross-fitted by decision) on the log, with its held-out quality."""
    return ope_reward_model(log.events, log.action, log.reward, log.present, n_folds=n_folds, seed=seed)


# --------------------------------------------------------------------------- estimation


@dataclass(frozen=True)
class EstimationConfig:
    estimators: tuple[str, ...] = ESTIMATORS
    slate: tuple[str, ...] = SLATE
    intervals: tuple[str, ...] = INTERVALS
    level: float = 0.95
    n_bootstrap: int = 1000  # page-scope estimates only
    seed: int = 0
    reward_max: float | None = None  # a-priori reward bound (Bernstein interval, clipping)
    reward_min: float | None = None  # a-priori lower reward bound (clipping); default: 0 for clicks, else observed
    min_ess: float = 100.0  # estimates from fewer effective samples are flagged


def check_config(cfg: EstimationConfig) -> EstimationConfig:
    """Refuse unknown names up front with the list of known ones."""
    for name in cfg.estimators:
        estimator_for(name)
    for name in cfg.slate:
        if name not in SLATE_ESTIMATORS:
            raise ValueError(f"unknown slate estimator '{name}'; known: {', '.join(SLATE_ESTIMATORS)}")
    for name in cfg.intervals:
        if name not in INTERVALS:
            raise ValueError(f"unknown interval '{name}'; known: {', '.join(INTERVALS)}")
    if not 0 < cfg.level < 1:
        raise ValueError(f"level must be in (0, 1), got {cfg.level}")
    return cfg


def estimator_for(name: str) -> OffPolicyEstimator:
    """``switch-dr`` or ``switch-dr:50`` (lambda); names as in bandit.estimators."""
    base, _, param = name.partition(":")
    base = base.lower().replace("_", "-")
    params = dict(ESTIMATOR_PARAMS.get(base, {}))
    if param:
        if base not in ESTIMATOR_PARAMS:
            raise ValueError(f"estimator '{base}' takes no parameter")
        try:
            params["lambda_"] = float(param)
        except ValueError:
            raise ValueError(f"estimator '{name}': '{param}' is not a number") from None
    try:
        return make_estimator(base, **params)
    except KeyError:
        raise ValueError(f"unknown estimator '{name}'; known: {', '.join(ESTIMATORS)} "
                         f"(slate: {', '.join(SLATE)})") from None


def _refusal(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, EstimationRefused):
        return {"refused": exc.reason.value, "detail": exc.detail}
    return {"refused": "invalid_input", "detail": str(exc)}


def _ess(w: np.ndarray) -> float:
    return float(w.sum() ** 2 / (w**2).sum()) if (w**2).sum() > 0 else 0.0


class _Scope:
    """Arrays of one scope: a slot (present rows only) or the page (all slots)."""

    def __init__(self, log: ReplayLog, dist: np.ndarray, q: np.ndarray, k: int | None):
        rows = np.flatnonzero(log.present[:, k]) if k is not None else slice(None)
        pick = (lambda a: a[rows, k]) if k is not None else (lambda a: a)
        self.k = k
        self.arrays = dict(reward=pick(log.reward), action=pick(log.action), pscore=pick(log.pscore),
                           action_dist=pick(dist), action_mask=pick(log.mask), estimated_rewards=pick(q))

    def estimate(self, estimator: OffPolicyEstimator) -> Estimate:
        if self.k is not None:
            return estimator.estimate(**self.arrays)
        return page_estimate(per_slot_estimate(estimator, **self.arrays))


DM_CAVEAT = ("sampling variance of the contexts only: the reward model's fitting error and bias are not in it, "
             "so this is not a confidence interval at the stated level (DR's is)")


@dataclass(frozen=True)
class ValueRange:
    """Where a scope's value must lie, and whether every logged reward sits at
    one end of it (then the sample variance is 0 and says nothing)."""

    lower: float
    upper: float
    all_at: str | None = None  # "lower" | "upper"


def value_range(log: ReplayLog, cfg: EstimationConfig, k: int | None) -> ValueRange:
    """A slot value lies in the reward range; the page value in K times it.

    The reward range is [reward_min, reward_max] when given; for 0/1 rewards
    [0, 1]; otherwise the observed range (a heuristic, noted in the results)."""
    rewards = log.reward[log.present]
    observed = (float(rewards.min()), float(rewards.max())) if rewards.size else (0.0, 0.0)
    binary = bool(rewards.size) and bool(np.isin(rewards, (0.0, 1.0)).all())
    lo = cfg.reward_min if cfg.reward_min is not None else (0.0 if binary else observed[0])
    hi = cfg.reward_max if cfg.reward_max is not None else (1.0 if binary else observed[1])
    lo, hi = min(lo, observed[0]), max(hi, observed[1])  # a bound the log breaks is no bound
    if k is None:
        lo, hi = log.shape[1] * min(lo, 0.0), log.shape[1] * max(hi, 0.0)
    return ValueRange(lo, hi)


def _intervals(est: Estimate, cfg: EstimationConfig, bernstein_bound: float | None,
               reward_cap: float | None, bounds: ValueRange | None = None,
               n_eff: float | None = None) -> dict[str, Any]:
    """Each configured interval, clipped to ``bounds``; with every reward at one
    end of the range the normal and bootstrap intervals (degenerate then) are
    the Clopper-Pearson interval on ``n_eff`` trials instead."""
    out: dict[str, Any] = {}
    for method in cfg.intervals:
        try:
            ci = _interval(est, method, cfg, bernstein_bound, reward_cap, bounds, n_eff)
        except (ValueError, EstimationRefused) as exc:
            out[method] = {"not_applicable": str(exc)}
            continue
        if ci is None:
            out[method] = {"not_applicable": "needs IPS on rewards in [0, r_max]"}
            continue
        if bounds is not None:
            ci = clipped(ci, bounds.lower, bounds.upper)
        out[method] = {"lower": float(ci.lower), "upper": float(ci.upper), "method": ci.method}
        if est.name.endswith("dm"):
            out[method].update(nominal=False, caveat=DM_CAVEAT)
    return out


def _interval(est: Estimate, method: str, cfg: EstimationConfig, bernstein_bound: float | None,
              reward_cap: float | None, bounds: ValueRange | None, n_eff: float | None) -> Interval | None:
    if method == "normal":
        return _widened(normal_interval(est, cfg.level), bounds, n_eff)
    if method == "bootstrap":
        return _widened(bootstrap_interval(est, cfg.level, cfg.n_bootstrap, cfg.seed), bounds, n_eff)
    if bernstein_bound is None or reward_cap is None:
        return None
    if est.name == "ipw":
        return ipw_bernstein_interval(est, reward_cap, level=cfg.level)
    # page IPS: contributions in [0, bound], value <= page cap
    ci = empirical_bernstein_interval(est.contributions, bernstein_bound, cfg.level)
    return type(ci)(est.value, ci.lower, min(float(ci.upper), reward_cap), ci.level, ci.method)


def _widened(ci: Interval, bounds: ValueRange | None, n_eff: float | None) -> Interval:
    """With every reward the estimate rests on at one end of the range (0 clicks),
    the interval also spans the Clopper-Pearson interval on ``n_eff`` trials."""
    if bounds is None or not bounds.all_at or not n_eff:
        return ci
    cp = no_success_interval(_value(ci), n_eff, bounds.lower, bounds.upper,
                             at_upper=bounds.all_at == "upper", level=ci.level)
    return Interval(ci.estimate, min(float(ci.lower), float(cp.lower)), max(float(ci.upper), float(cp.upper)),
                    ci.level, f"{ci.method} + {cp.method}")


def _value(ci: Interval) -> float:
    return float(np.asarray(ci.estimate))


def _all_at(rewards: np.ndarray, bounds: ValueRange) -> str | None:
    """"lower"/"upper" when every reward is at that end of the range."""
    if not rewards.size or bounds.upper <= bounds.lower:
        return None
    return "lower" if (rewards == bounds.lower).all() else "upper" if (rewards == bounds.upper).all() else None


def _scope_bounds(log: ReplayLog, bounds: ValueRange, weights: dict[int, np.ndarray], k: int | None,
                  weighted: bool) -> ValueRange:
    """``bounds`` with ``all_at`` from the rewards an estimate rests on: every
    logged reward of the scope for DM, those the target's weights reach for
    the weighted estimators (a target never observed to earn anything)."""
    slots = range(log.shape[1]) if k is None else [k]
    if k is None:  # page: per slot range
        bounds_slot = replace(bounds, lower=bounds.lower / log.shape[1], upper=bounds.upper / log.shape[1])
    else:
        bounds_slot = bounds
    parts = []
    for j in slots:
        r = log.reward[log.present[:, j], j]
        if weighted:
            if j not in weights:
                return bounds
            r = r[weights[j] > 0]
        parts.append(r)
    at = _all_at(np.concatenate(parts) if parts else np.zeros(0), bounds_slot)
    return replace(bounds, all_at=at)


def _flags(name: str, n_eff: float | None, cfg: EstimationConfig) -> list[str]:
    if n_eff is not None and n_eff < cfg.min_ess:
        what = "samples" if name == "dm" else "effective samples (ESS)"
        return [f"low_ess: {n_eff:.0f} {what} < min_ess {cfg.min_ess:g}"]
    return []


def evaluate_policy(log: ReplayLog, dist: np.ndarray, q: np.ndarray, cfg: EstimationConfig,
                    known_at_logged_only: np.ndarray | None = None) -> dict[str, Any]:
    """Estimates (per estimator x scope, with intervals), slate estimates and
    diagnostics of one target's distributions ``dist`` (n, K, A).

    ``known_at_logged_only`` (n,) marks events where ``dist`` is known only at
    the logged actions (the ``logged`` target on a log with only the chosen
    propensities): estimators that need the whole distribution are refused
    there instead of being fed a made-up one."""
    diag, weights = diagnostics(log, dist)
    r_max, r_note = _reward_bound(log, cfg)
    scopes: list[tuple[str, int | None]] = [("page", None)]
    if log.shape[1] > 1:
        scopes += [(f"slot:{label}", k) for k, label in enumerate(log.slot_labels)]
    ranges = {k: value_range(log, cfg, k) for _, k in scopes}
    estimates = []
    for scope_name, k in scopes:
        scope = _Scope(log, dist, q, k)
        unknown = _unknown_distribution(log, known_at_logged_only, k)
        for name in cfg.estimators:
            entry: dict[str, Any] = {"estimator": name, "scope": scope_name}
            if unknown and name.partition(":")[0].lower().replace("_", "-") in NEEDS_FULL_DISTRIBUTION:
                estimates.append({**entry, "refused": RefusalReason.UNKNOWN_LOGGING_DISTRIBUTION.value,
                                  "detail": unknown})
                continue
            try:
                est = scope.estimate(estimator_for(name))
            except (EstimationRefused, ValueError) as exc:
                estimates.append({**entry, **_refusal(exc)})
                continue
            bound, cap = _bernstein_bound(est, name, weights, k, r_max, log.shape[1])
            entry.update(_numbers(est))
            entry["ess"] = _scope_ess(diag, scope_name)
            n_eff = float(est.n) if name == "dm" else entry["ess"]
            # The bootstrap is the costly interval: page scope only (slots get normal/Bernstein).
            slot_cfg = cfg if k is None else replace(cfg, intervals=tuple(m for m in cfg.intervals
                                                                          if m != "bootstrap"))
            bounds = _scope_bounds(log, ranges[k], weights, k, weighted=name != "dm")
            entry["intervals"] = _intervals(est, slot_cfg, bound, cap, bounds, n_eff)
            entry["flags"] = _flags(name, n_eff, cfg)
            estimates.append(entry)
    for name in cfg.slate:
        entry = {"estimator": name, "scope": "page"}
        try:
            est = slate_estimate(log, dist, name)
        except (EstimationRefused, ValueError) as exc:
            estimates.append({**entry, **_refusal(exc)})
            continue
        entry.update(_numbers(est))
        entry["ess"] = _ess(est.weights) if est.weights is not None else _scope_ess(diag, "page")
        bounds = _scope_bounds(log, ranges[None], weights, None, weighted=True)
        entry["intervals"] = _intervals(est, cfg, None, None, bounds, entry["ess"])
        entry["flags"] = _flags(name, entry["ess"], cfg)
        estimates.append(entry)
    return {"estimates": estimates, "diagnostics": diag, "weights": _histogram(weights),
            "notes": [r_note] if r_note else []}


NEEDS_FULL_DISTRIBUTION = ("dm", "dr", "sndr", "switch-dr", "dr-os")  # sum_a pi(a|x) q(x, a)


def _unknown_distribution(log: ReplayLog, partial: np.ndarray | None, k: int | None) -> str:
    """Why estimators needing the target's whole distribution cannot run ("" if they can)."""
    if partial is None or not partial.any():
        return ""
    rows = partial if k is None else partial & log.present[:, k]
    if not rows.any():
        return ""
    return (f"{int(rows.sum())} of {log.n} decisions carry only the chosen action's propensity (an imported "
            "single-choice log): the logging policy's distribution over the other collections is unknown, so "
            "DM and the DR family cannot value it; IPS and SNIPS need only the chosen action's and are exact")


def _numbers(est: Estimate) -> dict[str, float]:
    c = est.contributions
    return {"value": float(est.value), "se": float(c.std(ddof=1) / math.sqrt(c.size)) if c.size > 1 else math.nan,
            "n": int(c.size)}


def _scope_ess(diag: dict[str, Any], scope: str) -> float | None:
    """ESS of a slot's weights; for the page, the smallest slot ESS."""
    if scope == "page":
        values = [d.get("effective_sample_size") for d in diag["slots"].values()]
        values = [v for v in values if v is not None]
        return min(values) if values else None
    return diag["slots"].get(scope.partition(":")[2], {}).get("effective_sample_size")


def slate_estimate(log: ReplayLog, dist: np.ndarray, name: str) -> Estimate:
    """Slate estimators on the page with the target's slot-conditional
    probabilities of the logged slate (exact for SIPS; IIPS/PI treat them as
    marginals -- exact when slots are chosen independently)."""
    target_pscore = np.take_along_axis(dist, log.action[..., None], axis=-1)[..., 0]
    return SLATE_ESTIMATORS[name](reward=log.reward, pscore=log.pscore, target_pscore=target_pscore)


def _reward_bound(log: ReplayLog, cfg: EstimationConfig) -> tuple[float | None, str]:
    rewards = log.reward[log.present]
    if rewards.size and rewards.min() < 0:
        return None, "negative rewards: no Bernstein interval"
    if cfg.reward_max is not None:
        if rewards.size and rewards.max() > cfg.reward_max:
            return None, f"rewards exceed reward_max={cfg.reward_max}: no Bernstein interval"
        return cfg.reward_max, ""
    top = float(rewards.max()) if rewards.size else 0.0
    if top <= 0:
        return None, "no positive reward: no Bernstein interval"
    return top, f"Bernstein interval uses the observed maximum reward {top:g} as r_max (heuristic)"


def _bernstein_bound(est: Estimate, name: str, weights: dict[int, np.ndarray], k: int | None,
                     r_max: float | None, k_max: int) -> tuple[float | None, float | None]:
    """(contribution bound, value cap) for IPS: slot -> (max w * r_max, r_max);
    page -> (sum of slot max weights * r_max, K r_max)."""
    if r_max is None or name.lower() not in ("ips", "ipw"):
        return None, None
    if k is not None:
        return (float(weights[k].max()) * r_max if k in weights else None), r_max
    if len(weights) < k_max:
        return None, None
    return sum(float(w.max()) for w in weights.values()) * r_max, k_max * r_max


def diagnostics(log: ReplayLog, dist: np.ndarray) -> tuple[dict[str, Any], dict[int, np.ndarray]]:
    """Per-slot ESS/weights/support (bandit.estimators.diagnose) and the joint
    (page) weight; refusals kept as such. Also returns per-slot weights."""
    slots: dict[str, Any] = {}
    weights: dict[int, np.ndarray] = {}
    for k, label in enumerate(log.slot_labels):
        rows = np.flatnonzero(log.present[:, k])
        arrays = dict(action=log.action[rows, k], pscore=log.pscore[rows, k], action_dist=dist[rows, k],
                      action_mask=log.mask[rows, k])
        try:
            known = log.logged_dist[rows, k]
            d = diagnose(**arrays, logging_dist=np.where(np.isnan(known), 1.0, known))  # unknown: support = mask
            weights[k] = importance_weights(**arrays, allow_deterministic=True)
        except (EstimationRefused, ValueError) as exc:
            slots[label] = _refusal(exc)
            continue
        slots[label] = {**d.__dict__}
    page: dict[str, Any]
    if len(weights) == len(log.slot_labels):
        joint = np.ones(log.n)
        for k, w in weights.items():
            joint[np.flatnonzero(log.present[:, k])] *= w
        page = {"n": log.n, "effective_sample_size": _ess(joint), "max_weight": float(joint.max()),
                "mean_weight": float(joint.mean())}
    else:
        page = {"refused": "see slots", "detail": "a slot's propensities are unusable"}
    return {"slots": slots, "page_joint": page}, weights


def _histogram(weights: dict[int, np.ndarray], bins: int = 30) -> dict[str, Any]:
    """Pooled per-slot weights as a log10 histogram (the report's weight plot)."""
    if not weights:
        return {}
    w = np.concatenate(list(weights.values()))
    pos = w[w > 0]
    out: dict[str, Any] = {"count": int(w.size), "zeros": int((w == 0).sum())}
    if pos.size:
        lo, hi = np.log10(pos.min()), np.log10(pos.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(np.log10(pos), bins=bins, range=(lo, hi))
        out.update({"log10_edges": edges.tolist(), "counts": counts.tolist(),
                    "quantiles": dict(zip(("p50", "p90", "p99", "max"),
                                          np.quantile(w, [0.5, 0.9, 0.99, 1.0]).tolist()))})
    return out


def page_value(log: ReplayLog, dist: np.ndarray, q: np.ndarray, estimator: str) -> Estimate:
    """The page estimate of one estimator (for search and importance)."""
    return _Scope(log, dist, q, None).estimate(estimator_for(estimator))


# --------------------------------------------------------------------------- all together


@dataclass(frozen=True)
class ReplayOptions:
    policies: tuple[str, ...] = ("uniform", "logged", "baseline", "vw")
    estimation: EstimationConfig = EstimationConfig()
    workers: int | None = None
    ray: bool = False  # VW targets on a local Ray instead of a process pool
    ray_address: str | None = None  # ... or on this Ray cluster
    search: bool = False
    grid: tuple[str, ...] = ()  # "key=v1|v2" axes; empty: simulator.replay_search.DEFAULT_GRID
    current: LearningSettings = LearningSettings()
    search_estimator: str = "dr"
    importance: bool = False
    importance_settings: LearningSettings | None = None  # default: current
    importance_estimator: str = "dr"


def build_targets(log: ReplayLog, policies: Sequence[str]) -> list[TargetSpec]:
    """Parse and check target specs against the log (external files fully)."""
    specs = []
    labels: set[str] = set()
    for text in policies:
        spec = parse_policy(text)
        if spec.kind == "probs":
            assert spec.path is not None
            ExternalProbabilities(spec.path).check_events({e.decision.event_id for e in log.events})
        if spec.label in labels:
            raise TargetError(f"policy '{text}' is given twice")
        labels.add(spec.label)
        specs.append(spec)
    return specs


def run_replay(paths: Sequence[Path] | ReplayLog, options: ReplayOptions = ReplayOptions(),
               progress: "ProgressSink | None" = None) -> dict[str, Any]:
    """Evaluate every target (and optionally search and importance) on a log;
    the returned dict is the JSON results file. With ``options.ray`` /
    ``ray_address`` every VW fan-out (targets, search, importance) runs on
    one Ray session."""
    engine = Engine(options.ray, options.ray_address)
    with use_engine(engine), _ray_session(engine, options.workers):
        return _run_replay(paths, options, progress)


@contextmanager
def _ray_session(engine: Engine, workers: int | None) -> Iterator[None]:
    """Start Ray once for a whole replay (and shut it down after) when asked."""
    if not engine.uses_ray:
        yield
        return
    try:
        import ray
    except ImportError:
        raise RuntimeError("Ray is not installed: pip install 'placement-engine[ray]'") from None
    started = not ray.is_initialized()
    if started:
        _ray_init(ray, engine.ray_address, workers or default_workers())
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _ray_init(ray: Any, address: str | None, workers: int) -> None:
    if address:
        import bandit
        import simulator

        # Ship this code to the cluster so workers run the same version.
        ray.init(address=address, log_to_driver=False, runtime_env={"py_modules": [bandit, simulator]})
    else:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)


def _run_replay(paths: Sequence[Path] | ReplayLog, options: ReplayOptions,
                progress: "ProgressSink | None") -> dict[str, Any]:
    cfg = check_config(options.estimation)
    sink = progress or ProgressSink()
    log = paths if isinstance(paths, ReplayLog) else load_log(paths)
    specs = build_targets(log, options.policies)
    fit = fit_reward_model(log, seed=cfg.seed)
    q = fit.q
    tasks = [ProgressiveTask(s) for s in specs]
    with sink.task("replaying targets", total=log.n * len(tasks)) as advance:
        dists = run_targets(log, tasks, options.workers, advance)
    policies = []
    for spec, dist in zip(specs, dists):
        partial = log.chosen_only if spec.kind == "logged" else None
        result = evaluate_policy(log, dist, q, cfg, partial)
        notes = result.pop("notes")
        if spec.kind == "model" and spec.meta.get("examples_learned"):
            notes.append(f"the saved model learned from {spec.meta['examples_learned']} examples; if those "
                         "include this log the estimate is in-sample (optimistic)")
        policies.append({"name": spec.label, "kind": spec.kind, "meta": {k: v for k, v in spec.meta.items()},
                         "settings": spec.settings.to_dict() if spec.settings else None,
                         "notes": notes, **result})
    results: dict[str, Any] = {
        "log": log_summary(log),
        "config": {"estimators": list(cfg.estimators), "slate": list(cfg.slate), "intervals": list(cfg.intervals),
                   "level": cfg.level, "n_bootstrap": cfg.n_bootstrap, "seed": cfg.seed,
                   "reward_max": cfg.reward_max, "reward_min": cfg.reward_min, "min_ess": cfg.min_ess,
                   "estimator_params": ESTIMATOR_PARAMS},
        "reward_model": fit.quality,
        "policies": policies,
    }
    if options.search:
        from simulator.replay_search import search_settings

        results["search"] = search_settings(log, q, options, sink)
    if options.importance:
        from simulator.importance import feature_importance

        results["importance"] = feature_importance(log, q, options, sink)
    return results


def log_summary(log: ReplayLog) -> dict[str, Any]:
    rewards = log.reward[log.present]
    ts = [e.decision.timestamp for e in log.events]
    return {"files": log.sources, "events": log.n, "slots": log.slot_labels, "max_candidates": log.shape[2],
            "slot_decisions": int(log.present.sum()), "mean_reward_per_slot": float(rewards.mean()),
            "mean_page_reward": float(log.reward.sum(axis=1).mean()),
            "reward_observed_share": float(np.mean([o for e in log.events for o in e.observed])),
            "first_timestamp": min(ts), "last_timestamp": max(ts)}


class ProgressSink:
    """Progress reporting seam: silent by default; the CLI passes a rich one."""

    def task(self, description: str, total: int) -> "_Task":
        return _Task()


class _Task:
    def __enter__(self) -> Progress:
        return lambda n: None

    def __exit__(self, *exc: Any) -> None:
        pass
