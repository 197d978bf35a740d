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

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from bandit.ope.estimate import (
    ROW_SUM_TOL,
    BoolArray,
    Estimate,
    EstimationRefused,
    FloatArray,
    IntArray,
    RefusalReason,
    check_pscore,
    make_estimate,
)
from bandit.ope.intervals import Interval, compute_interval

# --------------------------------------------------------------------------- input checks


def _check_dist(dist: FloatArray) -> None:
    if dist.ndim < 2 or not np.isfinite(dist).all() or (dist < 0).any():
        raise ValueError("action_dist must be finite, non-negative, shape (..., n, A)")
    if not np.allclose(dist.sum(axis=-1), 1.0, atol=ROW_SUM_TOL):
        raise ValueError("action_dist rows must sum to 1")


def target_policy(
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
    _, _, _, pi_logged = target_policy(action, action_dist, action_mask)
    forced = None if action_mask is None else np.asarray(action_mask, bool).sum(axis=-1) == 1
    return ratio_to_pscore(pi_logged, pscore, allow_deterministic, forced)


def ratio_to_pscore(
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
    act, dist, _, pi_logged = target_policy(action, action_dist, action_mask)
    forced = None if action_mask is None else np.asarray(action_mask, bool).sum(axis=-1) == 1
    w = ratio_to_pscore(pi_logged, pscore, forced=forced)
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
