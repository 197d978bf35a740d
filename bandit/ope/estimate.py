"""An off-policy estimate, and why an estimator may refuse to give one.

Shared by the estimators and the intervals (which quantify an estimate), so
neither imports the other's module. Each estimate is stored as
``value = mean(base) + sum_m sum(num_m)/sum(den_m)``: the bootstrap recomputes
the ratio on every resample, and the linearised per-round contributions have
the estimator's asymptotic variance.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

PSCORE_TOL = 1e-12
ROW_SUM_TOL = 1e-6


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
    if (p > 1 + PSCORE_TOL).any():
        raise EstimationRefused(RefusalReason.PSCORE_ABOVE_ONE, f"max {p.max()}")
    if not allow_deterministic and p.shape[-1] > 0:
        informative = np.ones(p.shape, bool) if forced is None else ~np.broadcast_to(np.asarray(forced, bool), p.shape)
        deterministic = np.all((p >= 1 - PSCORE_TOL) | ~informative, axis=-1) & informative.any(axis=-1)
        if deterministic.any():
            raise EstimationRefused(RefusalReason.DETERMINISTIC_LOGGER, "all propensities are 1")
    return p


# --------------------------------------------------------------------------- result type


def safe_ratio(num: ArrayLike, den: ArrayLike) -> FloatArray:
    """num/den with 0 where den == 0 (no weighted rounds: the term contributes 0)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    shape = np.broadcast_shapes(num.shape, den.shape)
    out = np.zeros(shape)
    np.divide(num, den, out=out, where=np.broadcast_to(den != 0, shape))
    return out


def scalar(x: FloatArray) -> float | FloatArray:
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
            self.name, scalar(np.asarray(self.value)[idx]), pick(self.contributions),
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
        ratios = safe_ratio(sums[:, 1 : 1 + m], sums[:, 1 + m :]).sum(axis=1)
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
    ratio = safe_ratio(num.sum(axis=-1), den.sum(axis=-1))  # (..., m)
    lin = ratio[..., None] + safe_ratio(
        num - ratio[..., None] * den, den.mean(axis=-1, keepdims=True)
    )
    contributions = base + lin.sum(axis=-2)
    value = base.mean(axis=-1) + ratio.sum(axis=-1)
    return Estimate(name, scalar(value), contributions, base, num, den, weights)


def subsampled(est: Estimate, pdrop: ArrayLike | None) -> Estimate:
    """The estimate over the full log from one computed on a subsampled log
    whose row i was kept with probability 1 - pdrop[i] (the joined log's
    ``pdrop``, see ``learner.sample_rate``).

    Each row weighs 1 / (1 - pdrop) (Horvitz-Thompson), normalised by the
    weights' sum (Hajek: the full log's size is not known from the kept rows):
    the mean term becomes the ratio sum(s base) / sum(s), and every ratio term
    sum(s num) / sum(s den). Unbiased (consistent for the ratios) whatever
    pdrop each row had, provided the drop did not depend on the row's reward,
    as a hash of the event id does not. Rows all kept with pdrop 0: ``est``
    itself, unchanged; one constant pdrop: the same value."""
    if pdrop is None:
        return est
    p = np.asarray(pdrop, dtype=float)
    if not p.any():
        return est
    if p.shape[-1] != est.n or (p < 0).any() or (p >= 1).any():
        raise ValueError(f"pdrop must be {est.n} values in [0, 1)")
    s = np.broadcast_to(1.0 / (1.0 - p), est.base.shape)
    num = np.concatenate([(s * est.base)[..., None, :], s[..., None, :] * est.num], axis=-2)
    den = np.concatenate([s[..., None, :], s[..., None, :] * est.den], axis=-2)
    weights = None if est.weights is None else est.weights * s / s.mean(axis=-1, keepdims=True)
    return make_estimate(est.name, np.zeros(est.base.shape), num, den, weights)
