"""Confidence intervals for off-policy estimates (:class:`bandit.ope.estimators.Estimate`).

* :func:`normal_interval` -- CLT on the per-round (linearised) contributions;
  vectorised over batch axes.
* :func:`bootstrap_interval` -- nonparametric percentile bootstrap; resamples
  rounds via multinomial count matrices and recomputes self-normalised ratios
  on every resample (obp bootstraps the already-normalised round rewards,
  which ignores the normaliser's randomness).
* :func:`empirical_bernstein_interval` / :func:`ipw_bernstein_interval` --
  finite-sample interval for bounded i.i.d. contributions (Maurer & Pontil 2009).

The nominal level is configurable (default 0.95); random methods take a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from bandit.ope.estimate import Estimate, FloatArray, scalar

DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A two-sided interval around ``estimate`` at nominal ``level``."""

    estimate: float | FloatArray
    lower: float | FloatArray
    upper: float | FloatArray
    level: float
    method: str

    def covers(self, value: float | ArrayLike) -> bool | np.ndarray:
        hit = (np.asarray(self.lower) <= value) & (np.asarray(value) <= self.upper)
        return bool(hit) if np.ndim(hit) == 0 else hit

    @property
    def width(self) -> float | FloatArray:
        return scalar(np.asarray(self.upper) - np.asarray(self.lower))


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


def normal_interval(est: Estimate, level: float = DEFAULT_LEVEL) -> Interval:
    """value +- z * sd(contributions) / sqrt(n).

    Asymptotically exact when the contributions have finite variance. For
    SNIPW/SNDR the contributions are delta-method linearised, so this is the
    correct sandwich variance. Poor with heavy-tailed weights at small n.
    """
    n = est.n
    if n < 2:
        raise ValueError("need at least 2 rounds")
    z = NormalDist().inv_cdf(0.5 + _check_level(level) / 2)
    half = z * est.contributions.std(axis=-1, ddof=1) / math.sqrt(n)
    value = np.asarray(est.value)
    return Interval(est.value, scalar(value - half), scalar(value + half), level, "normal")


def bootstrap_distribution(
    est: Estimate,
    n_resamples: int = 1000,
    seed: int | np.random.Generator = 0,
    max_cells: int = 1 << 22,
) -> FloatArray:
    """Bootstrap replicates of an unbatched estimate, shape (n_resamples,).

    Each resample draws n rounds with replacement, encoded as a count matrix
    (B, n) built with one ``bincount``; the statistic is
    :meth:`Estimate.reweighted` (a matrix product), in chunks of at most
    ``max_cells`` counts to bound memory.
    """
    rng = np.random.default_rng(seed)
    n = est.n
    chunk = max(1, min(n_resamples, max_cells // max(n, 1)))
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        out[start : start + b] = est.reweighted(counts)
    return out


def bootstrap_interval(
    est: Estimate,
    level: float = DEFAULT_LEVEL,
    n_resamples: int = 1000,
    seed: int | np.random.Generator = 0,
) -> Interval:
    """Percentile bootstrap interval; batch axes are looped with one seeded stream.

    Resamples whole rounds, so self-normalised ratios are recomputed on
    each resample. Valid asymptotically like the normal interval; it adapts to
    skewness but can undercover with very heavy-tailed weights.
    """
    alpha = 1 - _check_level(level)
    rng = np.random.default_rng(seed)
    lower, upper = np.empty(est.batch_shape), np.empty(est.batch_shape)
    for i in np.ndindex(*est.batch_shape):
        reps = bootstrap_distribution(est[i] if i else est, n_resamples, rng)
        lower[i], upper[i] = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return Interval(est.value, scalar(lower), scalar(upper), level, "bootstrap")


def empirical_bernstein_interval(
    values: ArrayLike, upper_bound: float, level: float = DEFAULT_LEVEL
) -> Interval:
    """Finite-sample interval for the mean of i.i.d. values in [0, upper_bound].

    Maurer & Pontil (2009, Thm 4) per side at delta/2, scaled to range b:
    mean +- ( sqrt(2 V ln(4/delta) / n) + 7 b ln(4/delta) / (3 (n - 1)) ),
    V the unbiased sample variance, intersected with [0, b]. Coverage >= level
    for every n >= 2 provided the values really are i.i.d. and bounded by
    ``upper_bound`` *a priori* (not a bound read off the same data).
    """
    x = np.asarray(values, dtype=float)
    n = x.shape[-1]
    if n < 2 or upper_bound <= 0:
        raise ValueError("need n >= 2 and a positive upper_bound")
    if (x < 0).any() or (x > upper_bound * (1 + 1e-12)).any():
        raise ValueError("values outside [0, upper_bound]; the bound does not apply")
    log_term = math.log(4 / (1 - _check_level(level)))
    mean = x.mean(axis=-1)
    half = np.sqrt(2 * x.var(axis=-1, ddof=1) * log_term / n)
    half = half + 7 * upper_bound * log_term / (3 * (n - 1))
    lo, hi = np.clip(mean - half, 0, upper_bound), np.clip(mean + half, 0, upper_bound)
    return Interval(scalar(mean), scalar(lo), scalar(hi), level, "empirical-bernstein")


def ipw_bernstein_interval(
    est: Estimate, r_max: float, max_weight: float | None = None, level: float = DEFAULT_LEVEL
) -> Interval:
    """Empirical-Bernstein interval for an IPW estimate with rewards in [0, r_max].

    Contributions w_i r_i lie in [0, max_weight * r_max]. ``max_weight``
    should be an a-priori bound on pi/mu (e.g. max pi / min logging
    probability, known for epsilon-greedy loggers); if omitted, the observed
    maximum weight is used, which makes the guarantee heuristic. The upper
    end is also capped at r_max, since a policy value cannot exceed it.
    """
    if est.name != "ipw" or est.weights is None:
        raise ValueError("ipw_bernstein_interval needs an (unclipped or clipped) IPW estimate")
    bound = float(np.max(est.weights)) if max_weight is None else float(max_weight)
    ci = empirical_bernstein_interval(est.contributions, bound * r_max, level)
    cap = lambda v: scalar(np.minimum(np.asarray(v), r_max))  # noqa: E731
    return Interval(est.value, cap(ci.lower), cap(ci.upper), level, ci.method)


def compute_interval(
    est: Estimate,
    method: str = "normal",
    level: float = DEFAULT_LEVEL,
    n_resamples: int = 1000,
    seed: int = 0,
    r_max: float | None = None,
    max_weight: float | None = None,
) -> Interval:
    """Dispatch by method name: "normal", "bootstrap" or "bernstein" (IPW, needs r_max)."""
    if method == "normal":
        return normal_interval(est, level)
    if method == "bootstrap":
        return bootstrap_interval(est, level, n_resamples, seed)
    if method == "bernstein":
        if r_max is None:
            raise ValueError("the empirical Bernstein interval needs r_max")
        return ipw_bernstein_interval(est, r_max, max_weight, level)
    raise ValueError(f"unknown interval method {method!r}")


def clipped(ci: Interval, lower: float, upper: float) -> Interval:
    """``ci`` intersected with the range the value is known to lie in (a
    click rate in [0, 1]): the part outside is impossible, not uncertain."""
    lo = scalar(np.clip(np.asarray(ci.lower), lower, upper))
    hi = scalar(np.clip(np.asarray(ci.upper), lower, upper))
    return Interval(ci.estimate, lo, hi, ci.level, ci.method)


def no_success_interval(
    estimate: float, n_eff: float, lower: float, upper: float, *, at_upper: bool = False,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """Clopper-Pearson interval for 0 successes in ``n_eff`` trials, scaled to
    [lower, upper] (``at_upper``: every trial a success, mirrored).

    When every logged reward sits at one end of its range, the sample variance
    is 0 and a normal interval collapses to a point: 0 clicks in 125
    impressions would be "[0, 0]". The exact binomial bound says what 125
    trials can and cannot rule out: the rate is below 1 - (alpha/2)^(1/n)
    (0.029 for n = 125 at 95%). For weighted estimators pass the effective
    sample size, which is what the weights leave of n.
    """
    if n_eff <= 0:
        raise ValueError("no effective samples")
    alpha = 1 - _check_level(level)
    width = (upper - lower) * (1 - (alpha / 2) ** (1 / n_eff))
    if at_upper:
        return Interval(estimate, upper - width, upper, level, "clopper-pearson (all at the maximum)")
    return Interval(estimate, lower, lower + width, level, "clopper-pearson (no successes)")
