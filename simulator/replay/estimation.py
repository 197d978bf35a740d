"""Estimates of one target's value on the log: per slot and for the page,
with intervals and diagnostics; a refusal is kept as ``{"refused": reason,
"detail": ...}``, never turned into a number."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bandit.ope.slate import SLATE_ESTIMATORS
from bandit.ope.estimate import EstimationRefused, Estimate, RefusalReason, make_estimate, subsampled
from bandit.ope.estimators import OffPolicyEstimator, importance_weights, make_estimator
from bandit.ope.diagnostics import diagnose
from bandit.ope.page import page_estimate, per_slot_estimate
from bandit.ope.intervals import (
    Interval,
    bootstrap_interval,
    clipped,
    empirical_bernstein_interval,
    ipw_bernstein_interval,
    no_success_interval,
    normal_interval,
)
from simulator.replay.cautions import policy_warnings
from simulator.replay.logarrays import ReplayLog
from simulator.replay.options import ESTIMATOR_PARAMS, ESTIMATORS, INTERVALS, SLATE, EstimationConfig


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
    """``switch-dr`` or ``switch-dr:50`` (lambda); names as in bandit.ope.estimators."""
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


def refusal(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, EstimationRefused):
        return {"refused": exc.reason.value, "detail": exc.detail}
    return {"refused": "invalid_input", "detail": str(exc)}


def _ess(w: np.ndarray) -> float:
    return float(w.sum() ** 2 / (w**2).sum()) if (w**2).sum() > 0 else 0.0


class _Scope:
    """Arrays of one scope: a slot (present rows only) or the page (all slots).

    On a positional log (each row one position) the page is the sum of the
    position values, each on its own rows (:func:`sum_of_slots`); otherwise
    the per-decision sum over slots (padded slots add nothing)."""

    def __init__(self, log: ReplayLog, dist: np.ndarray, q: np.ndarray, k: int | None):
        rows = np.flatnonzero(log.present[:, k]) if k is not None else slice(None)
        pick = (lambda a: a[rows, k]) if k is not None else (lambda a: a)
        self.k = k
        self.pdrop = log.pdrop[rows] if log.pdrop.size else None  # subsampled rows weigh 1 / (1 - pdrop)
        self.slots = [_Scope(log, dist, q, j) for j in range(log.shape[1])] if k is None and log.positional else []
        self.rows = [np.flatnonzero(log.present[:, j]) for j in range(log.shape[1])] if self.slots else []
        self.n = log.n
        self.arrays = dict(reward=pick(log.reward), action=pick(log.action), pscore=pick(log.pscore),
                           action_dist=pick(dist), action_mask=pick(log.mask), estimated_rewards=pick(q))

    def estimate(self, estimator: OffPolicyEstimator) -> Estimate:
        if self.k is not None:
            return subsampled(estimator.estimate(**self.arrays), self.pdrop)
        if self.slots:
            return sum_of_slots([s.estimate(estimator) for s in self.slots], self.rows, self.n)
        return subsampled(page_estimate(per_slot_estimate(estimator, **self.arrays)), self.pdrop)


def sum_of_slots(parts: list[Estimate], rows: list[np.ndarray], n: int) -> Estimate:
    """One estimate over all n rows whose value is the sum of the slot
    estimates, each computed on its own rows (disjoint). Base terms are scaled
    by n / n_k on their rows (their mean over n is the slot's mean); ratio
    terms keep their rows and are zero elsewhere (the ratio is unchanged), so
    the linearised variance is ~ sum_k var_k / n_k and the bootstrap still
    recomputes each ratio."""
    base = np.zeros(n)
    nums, dens = [], []
    for est, r in zip(parts, rows):
        if r.size == 0:
            continue
        base[r] += est.base * (n / r.size)
        for m in range(est.num.shape[0]):
            num, den = np.zeros(n), np.zeros(n)
            num[r], den[r] = est.num[m], est.den[m]
            nums.append(num)
            dens.append(den)
    weights = np.ones(n)
    for est, r in zip(parts, rows):
        if est.weights is not None and r.size:
            weights[r] = est.weights
    stack = (lambda a: np.array(a) if a else np.zeros((0, n)))
    return make_estimate(f"page-{parts[0].name}", base, stack(nums), stack(dens),
                         weights if any(e.weights is not None for e in parts) else None)


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
                estimates.append({**entry, **refusal(exc)})
                continue
            bound, cap = _bernstein_bound(est, name, weights, k, r_max, log.shape[1],
                                          _slot_sizes(log) if log.positional else None)
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
        if log.positional:
            estimates.append({**entry, "refused": "not_a_slate",
                              "detail": "every row fills one position: there are no logged slates to weight; "
                                        "the page value is the sum of the position values"})
            continue
        try:
            est = slate_estimate(log, dist, name)
        except (EstimationRefused, ValueError) as exc:
            estimates.append({**entry, **refusal(exc)})
            continue
        entry.update(_numbers(est))
        entry["ess"] = _ess(est.weights) if est.weights is not None else _scope_ess(diag, "page")
        bounds = _scope_bounds(log, ranges[None], weights, None, weighted=True)
        entry["intervals"] = _intervals(est, cfg, None, None, bounds, entry["ess"])
        entry["flags"] = _flags(name, entry["ess"], cfg)
        estimates.append(entry)
    return {"estimates": estimates, "diagnostics": diag, "weights": _histogram(weights),
            "warnings": policy_warnings(log, dist, weights, diag, estimates, cfg.min_ess),
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
    est = SLATE_ESTIMATORS[name](reward=log.reward, pscore=log.pscore, target_pscore=target_pscore)
    return subsampled(est, log.pdrop if log.pdrop.size else None)


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


def _slot_sizes(log: ReplayLog) -> dict[int, float]:
    """n / n_k per slot: how a positional page scales each slot's terms."""
    counts = log.present.sum(axis=0)
    return {k: log.n / float(c) for k, c in enumerate(counts) if c}


def _bernstein_bound(est: Estimate, name: str, weights: dict[int, np.ndarray], k: int | None,
                     r_max: float | None, k_max: int,
                     scale: dict[int, float] | None = None) -> tuple[float | None, float | None]:
    """(contribution bound, value cap) for IPS: slot -> (max w * r_max, r_max);
    page -> (sum of slot max weights * r_max, K r_max); a positional page
    (``scale`` = n / n_k) -> (max of scaled slot max weights * r_max, K r_max)."""
    if r_max is None or name.lower() not in ("ips", "ipw"):
        return None, None
    if k is not None:
        return (float(weights[k].max()) * r_max if k in weights else None), r_max
    if len(weights) < k_max:
        return None, None
    if scale is not None:
        top = max(float(w.max()) * scale.get(j, 1.0) for j, w in weights.items() if w.size)
        return top * r_max, k_max * r_max
    return sum(float(w.max()) for w in weights.values()) * r_max, k_max * r_max


def diagnostics(log: ReplayLog, dist: np.ndarray) -> tuple[dict[str, Any], dict[int, np.ndarray]]:
    """Per-slot ESS/weights/support (bandit.ope.estimators.diagnose) and the joint
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
            slots[label] = refusal(exc)
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

