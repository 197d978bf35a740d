"""Off-policy estimators for logged bandit data, vectorised with numpy.

Meaning and names follow Open Bandit Pipeline (``obp.ope``); the design is a
functional core (one function per estimator returning an :class:`Estimate`)
plus thin frozen dataclasses with obp's method names
(``estimate_policy_value``, ``estimate_round_rewards``, ``estimate_interval``).

Array conventions (single-slot / cb logs, ``n`` rounds, up to ``A`` actions):

``reward``             (n,)    observed reward of the logged action
``action``             (n,)    int index of the logged action
``pscore``             (n,)    logging propensity mu(a_i | x_i) of the logged action
``action_dist``        (n, A)  target policy pi(a | x_i); rows sum to 1
``action_mask``        (n, A)  bool, actions the logger could choose (ragged
                               candidate sets are padded; padded cells False)
``estimated_rewards``  (n, A)  reward-model predictions q_hat(x_i, a)

Every array may carry extra *leading* batch axes (e.g. ``(seeds, n)`` and
``(seeds, n, A)``); all reductions run over the round axis, so many
independent logs can be estimated in one call.

Each estimate is stored as ``value = mean(base) + sum_m sum(num_m)/sum(den_m)``
(``m`` ranges over self-normalised ratio terms, none for linear estimators).
That form lets the bootstrap recompute the *ratio* on every resample, and
gives linearised (delta-method) per-round contributions whose mean is the
point estimate and whose variance is the estimator's asymptotic variance.

Where this differs from obp, and why:

* SNIPW/SNDR round rewards: obp returns ``w_i r_i / mean(w)``; here the
  linearised ``R + w_i (r_i - R) / mean(w)``. Same mean, but only the latter
  has the right variance for CLT intervals.
* Intervals (:mod:`bandit.ope.intervals`): obp bootstraps the round rewards;
  here self-normalised ratios are recomputed per resample.
* Refusals: besides non-positive propensities (obp raises too), missing/NaN,
  > 1 and all-equal-to-1 (deterministic logger) propensities raise
  :class:`EstimationRefused` with a machine-readable ``reason``.
* ``pscore`` must be the propensity of the logged action (obp's meaning);
  no ``position`` argument: multi-slot logs go through
  :func:`per_slot_estimate` / :func:`page_estimate`, slates through the
  ``slate_*`` functions.
* Leading batch axes and padded ragged action sets (``action_mask``) are
  supported; no sklearn dependency (ridge reward model in numpy).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:  # pragma: no cover
    from bandit.ope.intervals import Interval

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

_PSCORE_TOL = 1e-12
_ROW_SUM_TOL = 1e-6


# --------------------------------------------------------------------------- refusals


class RefusalReason(str, enum.Enum):
    """Why an estimator refused to produce a number."""

    MISSING_PSCORE = "missing_pscore"
    NAN_PSCORE = "nan_pscore"
    NEGATIVE_PSCORE = "negative_pscore"
    ZERO_PSCORE = "zero_pscore"
    PSCORE_ABOVE_ONE = "pscore_above_one"
    DETERMINISTIC_LOGGER = "deterministic_logger"
    MISSING_REWARD_MODEL = "missing_reward_model"
    # the logging policy's distribution is needed but only the chosen action's propensity was logged
    UNKNOWN_LOGGING_DISTRIBUTION = "unknown_logging_distribution"


class EstimationRefused(ValueError):
    """Raised instead of returning a number that would be meaningless.

    ``reason`` is a :class:`RefusalReason` (a ``str`` enum, so it compares
    equal to its value, e.g. ``"zero_pscore"``).
    """

    def __init__(self, reason: RefusalReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


def check_pscore(pscore: ArrayLike | None, *, allow_deterministic: bool = False,
                 forced: ArrayLike | None = None) -> FloatArray:
    """Validate logging propensities; raise :class:`EstimationRefused` if unusable.

    Importance weights pi/mu need 0 < mu <= 1. A deterministic logger (every
    propensity 1 in a log) gives no exploration, so weighting cannot correct
    for anything the logger never tried: IPS-family estimators refuse then.
    Rounds where only one action was available (``forced``, e.g. the last slot
    of a page with as many slots as collections) say nothing about the logger
    and are left out of that test: every policy must take the same action there.
    """
    if pscore is None:
        raise EstimationRefused(RefusalReason.MISSING_PSCORE, "no logging propensities given")
    p = np.asarray(pscore, dtype=float)  # None entries in a list become NaN
    if np.isnan(p).any():
        raise EstimationRefused(RefusalReason.NAN_PSCORE, f"{int(np.isnan(p).sum())} NaN/missing")
    if (p < 0).any():
        raise EstimationRefused(RefusalReason.NEGATIVE_PSCORE, f"min {p.min()}")
    if (p == 0).any():
        raise EstimationRefused(RefusalReason.ZERO_PSCORE, f"{int((p == 0).sum())} zero")
    if (p > 1 + _PSCORE_TOL).any():
        raise EstimationRefused(RefusalReason.PSCORE_ABOVE_ONE, f"max {p.max()}")
    if not allow_deterministic and p.shape[-1] > 0:
        informative = np.ones(p.shape, bool) if forced is None else ~np.broadcast_to(np.asarray(forced, bool), p.shape)
        deterministic = np.all((p >= 1 - _PSCORE_TOL) | ~informative, axis=-1) & informative.any(axis=-1)
        if deterministic.any():
            raise EstimationRefused(RefusalReason.DETERMINISTIC_LOGGER, "all propensities are 1")
    return p


# --------------------------------------------------------------------------- result type


def _safe_ratio(num: ArrayLike, den: ArrayLike) -> FloatArray:
    """num/den with 0 where den == 0 (no weighted rounds: the term contributes 0)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    shape = np.broadcast_shapes(num.shape, den.shape)
    out = np.zeros(shape)
    np.divide(num, den, out=out, where=np.broadcast_to(den != 0, shape))
    return out


def _scalar(x: FloatArray) -> float | FloatArray:
    return float(x) if np.ndim(x) == 0 else x


@dataclass(frozen=True)
class Estimate:
    """A policy-value estimate and what intervals need to quantify it.

    ``value = mean(base) + sum_m sum(num[m]) / sum(den[m])``.
    ``contributions`` are per-round pseudo-outcomes whose mean is ``value``;
    for self-normalised terms they are the delta-method linearisation
    ``R + (num_i - R den_i) / mean(den)`` (R = the ratio), so their sample
    variance / n is a consistent variance estimate.
    """

    name: str
    value: float | FloatArray  # batch shape (...)
    contributions: FloatArray  # (..., n)
    base: FloatArray  # (..., n)
    num: FloatArray  # (..., m, n)
    den: FloatArray  # (..., m, n)
    weights: FloatArray | None = None  # (..., n) importance weights (None for DM)

    @property
    def n(self) -> int:
        return int(self.contributions.shape[-1])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.contributions.shape[:-1])

    def __getitem__(self, idx: Any) -> Estimate:
        """Select logs along the batch axes (e.g. ``est[3]`` for seed 3)."""
        pick = lambda a: None if a is None else np.asarray(a)[idx]  # noqa: E731
        return Estimate(
            self.name, _scalar(np.asarray(self.value)[idx]), pick(self.contributions),
            pick(self.base), pick(self.num), pick(self.den), pick(self.weights),
        )

    def reweighted(self, counts: ArrayLike) -> FloatArray:
        """Recompute the estimate with round multiplicities ``counts`` (B, n).

        This is the bootstrap statistic: ratios are recomputed per resample
        (numerator and denominator resampled jointly). Unbatched logs only.
        """
        if self.batch_shape:
            raise ValueError("reweighted() needs an unbatched estimate; index it first")
        c = np.asarray(counts, dtype=float)
        stack = np.concatenate([self.base[None], self.num, self.den], axis=0).T  # (n, 1+2m)
        sums = c @ stack
        m = self.num.shape[0]
        ratios = _safe_ratio(sums[:, 1 : 1 + m], sums[:, 1 + m :]).sum(axis=1)
        return sums[:, 0] / c.sum(axis=1) + ratios


def make_estimate(
    name: str,
    base: FloatArray,
    num: FloatArray | None = None,
    den: FloatArray | None = None,
    weights: FloatArray | None = None,
) -> Estimate:
    """Assemble an :class:`Estimate` and its linearised contributions from parts."""
    base = np.asarray(base, dtype=float)
    if num is None:
        num = den = np.zeros(base.shape[:-1] + (0, base.shape[-1]))
    ratio = _safe_ratio(num.sum(axis=-1), den.sum(axis=-1))  # (..., m)
    lin = ratio[..., None] + _safe_ratio(
        num - ratio[..., None] * den, den.mean(axis=-1, keepdims=True)
    )
    contributions = base + lin.sum(axis=-2)
    value = base.mean(axis=-1) + ratio.sum(axis=-1)
    return Estimate(name, _scalar(value), contributions, base, num, den, weights)


# --------------------------------------------------------------------------- input checks


def _check_dist(dist: FloatArray) -> None:
    if dist.ndim < 2 or not np.isfinite(dist).all() or (dist < 0).any():
        raise ValueError("action_dist must be finite, non-negative, shape (..., n, A)")
    if not np.allclose(dist.sum(axis=-1), 1.0, atol=_ROW_SUM_TOL):
        raise ValueError("action_dist rows must sum to 1")


def _policy(
    action: ArrayLike, action_dist: ArrayLike, action_mask: ArrayLike | None
) -> tuple[IntArray, FloatArray, BoolArray, FloatArray]:
    """Validate (action, action_dist, mask); return them plus pi(a_i | x_i)."""
    dist = np.asarray(action_dist, dtype=float)
    act = np.asarray(action)
    if dist.ndim < 2 or act.shape != dist.shape[:-1]:
        raise ValueError(f"action {act.shape} must match action_dist {dist.shape}[:-1]")
    if not np.issubdtype(act.dtype, np.integer):
        raise ValueError("action must be an integer index array")
    if act.size and (act.min() < 0 or act.max() >= dist.shape[-1]):
        raise ValueError("action index out of range of action_dist")
    _check_dist(dist)
    mask = (
        np.ones(dist.shape, dtype=bool)
        if action_mask is None
        else np.broadcast_to(np.asarray(action_mask, dtype=bool), dist.shape)
    )
    if not np.take_along_axis(mask, act[..., None], axis=-1).all():
        raise ValueError("a logged action is outside action_mask")
    pi_logged = np.take_along_axis(dist, act[..., None], axis=-1)[..., 0]
    return act, dist, mask, pi_logged


def _reward(reward: ArrayLike | None, shape: tuple[int, ...]) -> FloatArray:
    if reward is None:
        raise ValueError("reward is required")
    r = np.asarray(reward, dtype=float)
    if r.shape != shape or not np.isfinite(r).all():
        raise ValueError(f"reward must be finite with shape {shape}, got {r.shape}")
    return r


def importance_weights(
    *,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    action_mask: ArrayLike | None = None,
    allow_deterministic: bool = False,
) -> FloatArray:
    """w_i = pi(a_i | x_i) / mu(a_i | x_i), after refusing unusable propensities."""
    _, _, _, pi_logged = _policy(action, action_dist, action_mask)
    forced = None if action_mask is None else np.asarray(action_mask, bool).sum(axis=-1) == 1
    return _ratio_to_pscore(pi_logged, pscore, allow_deterministic, forced)


def _ratio_to_pscore(
    pi_logged: FloatArray, pscore: ArrayLike | None, allow_deterministic: bool = False,
    forced: ArrayLike | None = None,
) -> FloatArray:
    p = check_pscore(pscore, allow_deterministic=allow_deterministic, forced=forced)
    if p.shape != pi_logged.shape:
        raise ValueError(f"pscore {p.shape} must match action {pi_logged.shape}")
    return pi_logged / p


def _model(
    estimated_rewards: ArrayLike | None, dist: FloatArray, act: IntArray
) -> tuple[FloatArray, FloatArray]:
    """(q_hat(x_i, pi), q_hat(x_i, a_i)); padded cells (pi = 0) may hold NaN."""
    if estimated_rewards is None:
        raise EstimationRefused(RefusalReason.MISSING_REWARD_MODEL, "estimated_rewards needed")
    q = np.asarray(estimated_rewards, dtype=float)
    if q.shape != dist.shape:
        raise ValueError(f"estimated_rewards {q.shape} must match action_dist {dist.shape}")
    q_pi = np.where(dist > 0, dist * np.where(dist > 0, q, 0.0), 0.0).sum(axis=-1)
    q_logged = np.take_along_axis(q, act[..., None], axis=-1)[..., 0]
    if not (np.isfinite(q_pi).all() and np.isfinite(q_logged).all()):
        raise ValueError("estimated_rewards must be finite where used")
    return q_pi, q_logged


def _weighted_inputs(
    reward: ArrayLike | None,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    action_mask: ArrayLike | None,
) -> tuple[FloatArray, FloatArray, IntArray, FloatArray]:
    """(reward, weights, action, action_dist) for the IPS family."""
    act, dist, _, pi_logged = _policy(action, action_dist, action_mask)
    forced = None if action_mask is None else np.asarray(action_mask, bool).sum(axis=-1) == 1
    w = _ratio_to_pscore(pi_logged, pscore, forced=forced)
    return _reward(reward, act.shape), w, act, dist


# --------------------------------------------------------------------------- estimators


def direct_method(
    *,
    action_dist: ArrayLike,
    estimated_rewards: ArrayLike | None,
    reward: ArrayLike | None = None,
    action: ArrayLike | None = None,
    pscore: ArrayLike | None = None,
    action_mask: ArrayLike | None = None,
) -> Estimate:
    """DM: V = mean_i sum_a pi(a|x_i) q_hat(x_i, a).

    Needs no propensities (works for deterministic loggers). Unbiased only if
    q_hat is; trust it when the reward model is well specified on the
    target's actions. ``reward``/``action``/``pscore`` are ignored (accepted so
    every estimator shares one signature).
    """
    dist = np.asarray(action_dist, dtype=float)
    _check_dist(dist)
    q_pi, _ = _model(estimated_rewards, dist, np.zeros(dist.shape[:-1], dtype=np.int64))
    return make_estimate("dm", q_pi)


def inverse_probability_weighting(
    *,
    reward: ArrayLike,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    action_mask: ArrayLike | None = None,
    estimated_rewards: ArrayLike | None = None,
    clip: float = np.inf,
) -> Estimate:
    """IPW/IPS: V = mean_i min(w_i, clip) r_i with w_i = pi(a_i|x_i)/mu(a_i|x_i).

    Unbiased when mu > 0 wherever pi > 0 (no support deficiency) and
    propensities are correct; variance grows with the weights (check ESS).
    ``clip`` < inf is obp's ``lambda_`` (clipped IPS): lower variance, biased
    down for non-negative rewards.
    """
    r, w, _, _ = _weighted_inputs(reward, action, pscore, action_dist, action_mask)
    return make_estimate("ipw", np.minimum(w, clip) * r, weights=w)


def self_normalized_inverse_probability_weighting(
    *,
    reward: ArrayLike,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    action_mask: ArrayLike | None = None,
    estimated_rewards: ArrayLike | None = None,
) -> Estimate:
    """SNIPW/SNIPS: V = sum_i w_i r_i / sum_i w_i.

    Bias O(1/n), consistent, usually lower variance than IPW and always within
    the reward range. obp reports r_i w_i / mean(w) as round rewards; here
    contributions are the delta-method linearisation
    R + w_i (r_i - R)/mean(w), whose variance is the right one for intervals.
    Returns 0 if every weight is 0 (no logged round has target support).
    """
    r, w, _, _ = _weighted_inputs(reward, action, pscore, action_dist, action_mask)
    zero = np.zeros_like(r)
    return make_estimate("snipw", zero, (w * r)[..., None, :], w[..., None, :], weights=w)


def _dr_family(
    name: str,
    reward: ArrayLike,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    action_mask: ArrayLike | None,
    estimated_rewards: ArrayLike | None,
    shrink: Callable[[FloatArray], FloatArray],
) -> Estimate:
    """V = mean_i [ q_hat(x_i, pi) + shrink(w_i) (r_i - q_hat(x_i, a_i)) ]."""
    r, w, act, dist = _weighted_inputs(reward, action, pscore, action_dist, action_mask)
    q_pi, q_logged = _model(estimated_rewards, dist, act)
    return make_estimate(name, q_pi + shrink(w) * (r - q_logged), weights=w)


def doubly_robust(
    *,
    reward: ArrayLike,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    estimated_rewards: ArrayLike | None,
    action_mask: ArrayLike | None = None,
    clip: float = np.inf,
) -> Estimate:
    """DR: V = mean_i [ q_hat(x_i, pi) + min(w_i, clip) (r_i - q_hat(x_i, a_i)) ].

    Unbiased if propensities are correct (any fixed q_hat) *or* q_hat is
    correct. q_hat must not be fit on the same rounds it corrects (use
    :func:`cross_fit_rewards`), otherwise the correction is biased toward 0.
    """
    return _dr_family(
        "dr", reward, action, pscore, action_dist, action_mask, estimated_rewards,
        lambda w: np.minimum(w, clip),
    )


def self_normalized_doubly_robust(
    *,
    reward: ArrayLike,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    estimated_rewards: ArrayLike | None,
    action_mask: ArrayLike | None = None,
) -> Estimate:
    """SNDR: V = mean_i q_hat(x_i, pi) + sum_i w_i (r_i - q_hat_i) / sum_i w_i.

    Bias O(1/n), consistent; stable when weights are large. Contributions are
    delta-method linearised (obp uses w_i/mean(w) without linearising).
    """
    r, w, act, dist = _weighted_inputs(reward, action, pscore, action_dist, action_mask)
    q_pi, q_logged = _model(estimated_rewards, dist, act)
    resid = (w * (r - q_logged))[..., None, :]
    return make_estimate("sndr", q_pi, resid, w[..., None, :], weights=w)


def switch_doubly_robust(
    *,
    reward: ArrayLike,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    estimated_rewards: ArrayLike | None,
    action_mask: ArrayLike | None = None,
    lambda_: float = np.inf,
) -> Estimate:
    """Switch-DR (obp): V = mean_i [ q_hat(x_i, pi) + 1{w_i <= lambda_} w_i (r_i - q_hat_i) ].

    Rounds whose weight exceeds ``lambda_`` fall back to DM. lambda_=inf is
    DR, lambda_=0 is DM. Biased by the dropped corrections unless q_hat is
    right there; trust it when large-weight actions are well modelled. (As in
    obp the switch is per logged round, not Wang et al.'s per-action switch.)
    """
    return _dr_family(
        "switch-dr", reward, action, pscore, action_dist, action_mask, estimated_rewards,
        lambda w: np.where(w <= lambda_, w, 0.0),
    )


def doubly_robust_with_shrinkage(
    *,
    reward: ArrayLike,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    estimated_rewards: ArrayLike | None,
    action_mask: ArrayLike | None = None,
    lambda_: float = np.inf,
) -> Estimate:
    """DRos (Su et al. 2020, as obp): DR with w replaced by w lambda_ / (w^2 + lambda_).

    Optimistic shrinkage bounds each weight by sqrt(lambda_)/2; lambda_=inf
    is DR, lambda_=0 is DM. Biased unless q_hat is right; trades bias for
    variance when weights are heavy-tailed.
    """

    def shrink(w: FloatArray) -> FloatArray:
        if np.isinf(lambda_):
            return w
        if lambda_ == 0:
            return np.zeros_like(w)
        return lambda_ * w / (w**2 + lambda_)

    return _dr_family(
        "dr-os", reward, action, pscore, action_dist, action_mask, estimated_rewards, shrink
    )


# --------------------------------------------------------------------------- classes


@dataclass(frozen=True)
class OffPolicyEstimator:
    """obp-style wrapper: hyperparameters in fields, arrays as keyword arguments."""

    estimator_name: ClassVar[str] = ""

    def estimate(self, **log: Any) -> Estimate:
        raise NotImplementedError

    def estimate_policy_value(self, **log: Any) -> float | FloatArray:
        return self.estimate(**log).value

    def estimate_round_rewards(self, **log: Any) -> FloatArray:
        """Per-round (linearised) pseudo-outcomes; their mean is the estimate."""
        return self.estimate(**log).contributions

    def estimate_interval(
        self,
        *,
        method: str = "normal",
        level: float = 0.95,
        n_resamples: int = 1000,
        seed: int = 0,
        r_max: float | None = None,
        max_weight: float | None = None,
        **log: Any,
    ) -> Interval:
        """Confidence interval: "normal", "bootstrap" or (IPW only) "bernstein".

        See :mod:`bandit.ope.intervals`; ``r_max``/``max_weight`` feed "bernstein".
        """
        from bandit.ope.intervals import compute_interval

        return compute_interval(
            self.estimate(**log), method, level, n_resamples, seed, r_max, max_weight
        )


@dataclass(frozen=True)
class DirectMethod(OffPolicyEstimator):
    estimator_name: ClassVar[str] = "dm"

    def estimate(self, **log: Any) -> Estimate:
        return direct_method(**log)


@dataclass(frozen=True)
class InverseProbabilityWeighting(OffPolicyEstimator):
    estimator_name: ClassVar[str] = "ipw"
    clip: float = np.inf

    def estimate(self, **log: Any) -> Estimate:
        return inverse_probability_weighting(clip=self.clip, **log)


@dataclass(frozen=True)
class SelfNormalizedInverseProbabilityWeighting(OffPolicyEstimator):
    estimator_name: ClassVar[str] = "snipw"

    def estimate(self, **log: Any) -> Estimate:
        return self_normalized_inverse_probability_weighting(**log)


@dataclass(frozen=True)
class DoublyRobust(OffPolicyEstimator):
    estimator_name: ClassVar[str] = "dr"
    clip: float = np.inf

    def estimate(self, **log: Any) -> Estimate:
        return doubly_robust(clip=self.clip, **log)


@dataclass(frozen=True)
class SelfNormalizedDoublyRobust(OffPolicyEstimator):
    estimator_name: ClassVar[str] = "sndr"

    def estimate(self, **log: Any) -> Estimate:
        return self_normalized_doubly_robust(**log)


@dataclass(frozen=True)
class SwitchDoublyRobust(OffPolicyEstimator):
    estimator_name: ClassVar[str] = "switch-dr"
    lambda_: float = np.inf

    def estimate(self, **log: Any) -> Estimate:
        return switch_doubly_robust(lambda_=self.lambda_, **log)


@dataclass(frozen=True)
class DoublyRobustWithShrinkage(OffPolicyEstimator):
    estimator_name: ClassVar[str] = "dr-os"
    lambda_: float = np.inf

    def estimate(self, **log: Any) -> Estimate:
        return doubly_robust_with_shrinkage(lambda_=self.lambda_, **log)


InverseProbabilityScoring = InverseProbabilityWeighting  # "IPS" alias

ESTIMATORS: dict[str, type[OffPolicyEstimator]] = {
    "dm": DirectMethod,
    "ipw": InverseProbabilityWeighting,
    "ips": InverseProbabilityWeighting,
    "snipw": SelfNormalizedInverseProbabilityWeighting,
    "snips": SelfNormalizedInverseProbabilityWeighting,
    "dr": DoublyRobust,
    "sndr": SelfNormalizedDoublyRobust,
    "switch-dr": SwitchDoublyRobust,
    "dr-os": DoublyRobustWithShrinkage,
}


def make_estimator(name: str, **params: Any) -> OffPolicyEstimator:
    """Estimator by obp-style short name (case-insensitive, '_' == '-')."""
    key = name.lower().replace("_", "-")
    if key not in ESTIMATORS:
        raise KeyError(f"unknown estimator {name!r}; known: {sorted(ESTIMATORS)}")
    return ESTIMATORS[key](**params)


# --------------------------------------------------------------------------- diagnostics


@dataclass(frozen=True)
class Diagnostics:
    """Weight and support diagnostics of a (log, target policy) pair.

    effective_sample_size  (sum w)^2 / sum w^2; n when all weights are equal
    max_weight, mean_weight  of w_i = pi(a_i|x_i)/mu(a_i|x_i); mean ~ 1 if healthy
    support_deficiency     share of rounds where pi puts mass on an action
                           the logger could not choose (IPS is biased then)
    unsupported_mass       mean target mass on such actions (the share of the
                           target's value IPS cannot see)
    """

    n: int
    effective_sample_size: float
    max_weight: float
    mean_weight: float
    support_deficiency: float
    unsupported_mass: float


def diagnose(
    *,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    action_mask: ArrayLike | None = None,
    logging_dist: ArrayLike | None = None,
) -> Diagnostics:
    """Compute :class:`Diagnostics` for one log (no batch axes).

    An action is unsupported in a round if ``action_mask`` is False there or,
    when the full ``logging_dist`` (n, A) is known, its logging probability is
    0. Deterministic loggers are allowed here (that is when this matters).
    """
    act, dist, mask, pi_logged = _policy(action, action_dist, action_mask)
    if act.ndim != 1:
        raise ValueError("diagnose() takes a single log (no batch axes)")
    w = _ratio_to_pscore(pi_logged, pscore, allow_deterministic=True)
    supported = mask if logging_dist is None else mask & (np.asarray(logging_dist) > 0)
    lost = np.where(supported, 0.0, dist).sum(axis=-1)
    return Diagnostics(
        n=int(w.size),
        effective_sample_size=float(_safe_ratio(w.sum() ** 2, (w**2).sum())),
        max_weight=float(w.max()),
        mean_weight=float(w.mean()),
        support_deficiency=float((lost > 0).mean()),
        unsupported_mass=float(lost.mean()),
    )


# --------------------------------------------------------------------------- cross-fitting

Fit = Callable[[FloatArray, FloatArray], Any]
Predict = Callable[[Any, FloatArray], FloatArray]


def interaction_design(features: ArrayLike, action: ArrayLike, n_actions: int) -> FloatArray:
    """Design rows phi(x, a) for a ridge reward model.

    features (m, d): one-hot(a) (x) [x, 1] -- a separate linear model per action.
    features (m, A, d) per-action: [x_a, one-hot(a)] -- shared slope, per-action bias.
    """
    x = np.asarray(features, dtype=float)
    a = np.asarray(action, dtype=np.int64)
    rows = np.arange(a.size)
    if x.ndim == 2:
        xb = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
        out = np.zeros((x.shape[0], n_actions, xb.shape[1]))
        out[rows, a] = xb
        return out.reshape(x.shape[0], -1)
    if x.ndim == 3:
        return np.concatenate([x[rows, a], np.eye(n_actions)[a]], axis=1)
    raise ValueError("features must be (n, d) or (n, A, d)")


def ridge_fit(design: FloatArray, target: FloatArray, alpha: float = 1.0) -> FloatArray:
    """Ridge coefficients solving (X'X + alpha I) beta = X'y."""
    gram = design.T @ design + alpha * np.eye(design.shape[1])
    return np.linalg.solve(gram, design.T @ target)


def ridge_predict(beta: FloatArray, design: FloatArray) -> FloatArray:
    return design @ beta


@dataclass(frozen=True)
class CrossFit:
    """Out-of-fold reward predictions: estimated_rewards[i] comes from a model
    fit without fold[i]."""

    estimated_rewards: FloatArray  # (n, A)
    fold: IntArray  # (n,)


def cross_fit_rewards(
    features: ArrayLike,
    action: ArrayLike,
    reward: ArrayLike,
    *,
    n_actions: int | None = None,
    n_folds: int = 5,
    seed: int = 0,
    fit: Fit = ridge_fit,
    predict: Predict = ridge_predict,
) -> CrossFit:
    """K-fold cross-fitted q_hat(x_i, a) for all actions a.

    Rounds are randomly split (seeded) into ``n_folds`` folds; fold k's rows
    are predicted by ``fit`` on the other folds only, so a round's own reward
    never enters its prediction -- which keeps DR's correction unbiased.
    ``fit(design, y) -> model`` and ``predict(model, design) -> y_hat`` act on
    :func:`interaction_design` rows.
    """
    x = np.asarray(features, dtype=float)
    a = np.asarray(action, dtype=np.int64)
    y = np.asarray(reward, dtype=float)
    n = a.size
    n_act = int(n_actions or (x.shape[1] if x.ndim == 3 else a.max() + 1))
    if not 2 <= n_folds <= n:
        raise ValueError("need 2 <= n_folds <= n")
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % n_folds
    out = np.empty((n, n_act))
    for k in range(n_folds):
        train, test = fold != k, fold == k
        model = fit(interaction_design(x[train], a[train], n_act), y[train])
        for b in range(n_act):
            design = interaction_design(x[test], np.full(test.sum(), b), n_act)
            out[test, b] = predict(model, design)
    return CrossFit(out, fold)


# --------------------------------------------------------------------------- multi-slot


def per_slot_estimate(
    estimator: OffPolicyEstimator | Callable[..., Estimate],
    *,
    reward: ArrayLike,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    estimated_rewards: ArrayLike | None = None,
    action_mask: ArrayLike | None = None,
) -> Estimate:
    """Value of each slot of a CCB log; batch axis K appended (value shape (..., K)).

    Inputs carry a slot axis after the round axis: reward/action/pscore
    (..., n, K), action_dist/estimated_rewards/action_mask (..., n, K, A).
    ``pscore`` and ``action_dist`` must be *slot-conditional*:
    mu(a_k | x, a_<k) and pi(a_k | x, a_<k) given the logged earlier slots.
    Each slot is a single-slot problem. Assumption: this estimates slot k's
    reward with earlier slots as logged and slot k from the target -- equal
    to the target's slot value when slot k's reward and pi(. | x, a_<k) do
    not depend on the earlier choices (e.g. disjoint per-slot candidates).
    """

    def slot_first(arr: ArrayLike | None, extra: int) -> FloatArray | None:
        if arr is None:
            return None
        arr = np.asarray(arr)
        return np.moveaxis(arr, arr.ndim - 1 - extra, arr.ndim - 2 - extra)

    run = estimator.estimate if isinstance(estimator, OffPolicyEstimator) else estimator
    log = dict(reward=slot_first(reward, 0), action=slot_first(action, 0),
               pscore=slot_first(pscore, 0), action_dist=slot_first(action_dist, 1),
               estimated_rewards=slot_first(estimated_rewards, 1),
               action_mask=slot_first(action_mask, 1))
    return run(**log)


def page_estimate(slot_estimate: Estimate) -> Estimate:
    """Page value = sum of per-slot values (last batch axis), keeping ratio terms
    separate so the bootstrap still resamples each slot's ratio jointly."""
    e = slot_estimate
    if not e.batch_shape:
        raise ValueError("page_estimate expects a per-slot estimate with a slot axis")
    terms = e.num.shape[-3] * e.num.shape[-2]
    num = e.num.reshape(e.num.shape[:-3] + (terms, e.n))
    den = e.den.reshape(e.den.shape[:-3] + (terms, e.n))
    return make_estimate(f"page-{e.name}", e.base.sum(axis=-2), num, den)


# --------------------------------------------------------------------------- slates


def _slate_weights(pscore: ArrayLike | None, target_pscore: ArrayLike) -> FloatArray:
    """Per-slot ratios (..., n, K) after the usual propensity refusals."""
    p = check_pscore(pscore)
    t = np.asarray(target_pscore, dtype=float)
    if t.shape != p.shape or p.ndim < 2:
        raise ValueError(f"target_pscore {t.shape} must match pscore {p.shape} (n, K)")
    if not np.isfinite(t).all() or (t < 0).any() or (t > 1 + _PSCORE_TOL).any():
        raise ValueError("target_pscore must be probabilities")
    return t / p


def _page_reward(reward: ArrayLike, shape: tuple[int, ...]) -> FloatArray:
    """Accept page reward (..., n) or slot rewards (..., n, K) (summed)."""
    r = np.asarray(reward, dtype=float)
    r = r.sum(axis=-1) if r.shape == shape else r
    if r.shape != shape[:-1] or not np.isfinite(r).all():
        raise ValueError(f"reward must be (..., n) or (..., n, K) matching {shape}")
    return r


def slate_standard_ips(
    *, reward: ArrayLike, pscore: ArrayLike | None, target_pscore: ArrayLike
) -> Estimate:
    """SIPS (obp ``SlateStandardIPS``): V = mean_i r_i prod_k pi_k / mu_k.

    ``pscore``/``target_pscore`` (n, K) are slot-conditional probabilities of
    the logged slate (mu(a_k | x, a_<k)); by the chain rule their product is
    the joint slate propensity, so this is unbiased for any page reward with
    no assumption on reward structure -- at the price of product weights.
    (If you pass marginals instead, it is only valid when both policies pick
    slots independently.) ``reward`` is the page reward (n,) or slot rewards
    (n, K), summed as obp does.
    """
    w = _slate_weights(pscore, target_pscore)
    joint = w.prod(axis=-1)
    return make_estimate("sips", joint * _page_reward(reward, w.shape), weights=joint)


def slate_independent_ips(
    *, reward: ArrayLike, pscore: ArrayLike | None, target_pscore: ArrayLike
) -> Estimate:
    """IIPS (obp ``SlateIndependentIPS``, Li et al. 2018): V = mean_i sum_k w_ik r_ik.

    w_ik = pi(a_ik at k | x)/mu(a_ik at k | x) with *marginal* slot
    probabilities and ``reward`` the per-slot rewards (n, K). Unbiased when
    slot k's reward depends only on (x, a_k) (item-position model).
    """
    w = _slate_weights(pscore, target_pscore)
    r = np.asarray(reward, dtype=float)
    if r.shape != w.shape:
        raise ValueError("slate_independent_ips needs per-slot rewards (n, K)")
    return make_estimate("iips", (w * r).sum(axis=-1))


def slate_pseudo_inverse(
    *, reward: ArrayLike, pscore: ArrayLike | None, target_pscore: ArrayLike
) -> Estimate:
    """PI (Swaminathan et al. 2017): V = mean_i (sum_k w_ik - (K - 1)) r_i.

    w_ik uses *marginal* slot probabilities; ``reward`` is the page reward
    (n,) or slot rewards (n, K) (summed; slot rewards need not be observed).
    Unbiased when the page reward is additive over slots,
    E[r | x, s] = sum_k phi_k(x, s_k), and the logging policy picks slots
    independently given x (this closed form of the pseudo-inverse is exact
    for product logging policies; the target may be any joint policy -- only
    its marginals enter). Variance grows ~linearly in K, not exponentially.
    """
    w = _slate_weights(pscore, target_pscore)
    gain = w.sum(axis=-1) - (w.shape[-1] - 1)
    return make_estimate("pi", gain * _page_reward(reward, w.shape))


SLATE_ESTIMATORS: dict[str, Callable[..., Estimate]] = {
    "sips": slate_standard_ips,
    "iips": slate_independent_ips,
    "pi": slate_pseudo_inverse,
}
