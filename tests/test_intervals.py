"""Confidence intervals: coverage of the exact truth over many seeded logs.

All logs of a coverage test are simulated as one (seeds, n) batch; normal
intervals are computed for the whole batch at once, bootstrap intervals loop
over logs with vectorised resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from bandit.ope.estimators import doubly_robust, inverse_probability_weighting, self_normalized_doubly_robust, self_normalized_inverse_probability_weighting
from bandit.ope.intervals import (
    bootstrap_distribution,
    bootstrap_interval,
    compute_interval,
    empirical_bernstein_interval,
    ipw_bernstein_interval,
    normal_interval,
)

# --------------------------------------------------------------------------- world


@dataclass(frozen=True)
class World:
    p_x: np.ndarray  # (X,)
    q: np.ndarray  # (X, A) expected Bernoulli reward
    mu: np.ndarray  # (X, A) logging policy
    pi: np.ndarray  # (X, A) target policy

    @property
    def value(self) -> float:
        return float(self.p_x @ (self.pi * self.q).sum(axis=1))

    @property
    def max_weight(self) -> float:
        """A-priori bound on pi/mu (known to the analyst, not read off a log)."""
        return float((self.pi / self.mu).max())


def make_world(seed: int, n_contexts: int = 4, n_actions: int = 4) -> World:
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.1, 0.9, (n_contexts, n_actions))
    mu = rng.dirichlet(np.full(n_actions, 4.0), size=n_contexts)
    pi = rng.dirichlet(np.full(n_actions, 1.0), size=n_contexts)
    return World(rng.dirichlet(np.full(n_contexts, 5.0)), q, mu, pi)


def simulate(world: World, n: int, n_logs: int, seed: int) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.choice(world.p_x.size, p=world.p_x, size=(n_logs, n))
    cdf = world.mu[x].cumsum(axis=-1)
    a = np.minimum((rng.random((n_logs, n, 1)) > cdf).sum(axis=-1), world.mu.shape[1] - 1)
    r = (rng.random((n_logs, n)) < world.q[x, a]).astype(float)
    return dict(reward=r, action=a, pscore=world.mu[x, a], action_dist=world.pi[x]), x


WORLD = make_world(7)
TRUTH = WORLD.value
Q_FIXED = np.clip(WORLD.q + np.random.default_rng(98).normal(0, 0.2, WORLD.q.shape), 0, 1)

ESTIMATORS = {
    "ipw": lambda log, x: inverse_probability_weighting(**log),
    "snipw": lambda log, x: self_normalized_inverse_probability_weighting(**log),
    "dr": lambda log, x: doubly_robust(**log, estimated_rewards=Q_FIXED[x]),
}


def coverage(lower: np.ndarray, upper: np.ndarray) -> float:
    return float(((lower <= TRUTH) & (TRUTH <= upper)).mean())


# --------------------------------------------------------------------------- coverage


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_normal_interval_coverage(name: str) -> None:
    log, x = simulate(WORLD, n=500, n_logs=2000, seed=31)
    ci = normal_interval(ESTIMATORS[name](log, x), level=0.95)
    assert 0.93 <= coverage(ci.lower, ci.upper) <= 0.97


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_bootstrap_interval_coverage(name: str) -> None:
    log, x = simulate(WORLD, n=300, n_logs=1000, seed=32)
    ci = bootstrap_interval(ESTIMATORS[name](log, x), level=0.95, n_resamples=1000, seed=5)
    assert 0.93 <= coverage(ci.lower, ci.upper) <= 0.97


def test_empirical_bernstein_coverage_is_at_least_nominal() -> None:
    log, x = simulate(WORLD, n=200, n_logs=1000, seed=33)
    est = inverse_probability_weighting(**log)
    ci = ipw_bernstein_interval(est, r_max=1.0, max_weight=WORLD.max_weight, level=0.95)
    assert coverage(ci.lower, ci.upper) >= 0.95
    assert (np.asarray(ci.width) > normal_interval(est).width).all()  # the price of no CLT


# --------------------------------------------------------------------------- mechanics


def test_reweighting_recomputes_the_ratio_on_resampled_rounds() -> None:
    """reweighted(counts) == the estimator re-run on the resampled log."""
    log, x = simulate(WORLD, n=80, n_logs=1, seed=34)
    one = {k: v[0] for k, v in log.items()}
    idx = np.random.default_rng(0).integers(0, 80, 80)
    counts = np.bincount(idx, minlength=80)[None, :]
    resampled = {k: v[idx] for k, v in one.items()}
    for fn, extra in [
        (self_normalized_inverse_probability_weighting, {}),
        (self_normalized_doubly_robust, {"estimated_rewards": Q_FIXED[x[0]]}),
        (doubly_robust, {"estimated_rewards": Q_FIXED[x[0]]}),
    ]:
        rq = {k: v[idx] for k, v in extra.items()}
        direct = fn(**resampled, **rq).value
        assert fn(**one, **extra).reweighted(counts)[0] == pytest.approx(direct, rel=1e-12)


def test_bootstrap_is_seeded() -> None:
    log, _ = simulate(WORLD, n=100, n_logs=1, seed=35)
    est = self_normalized_inverse_probability_weighting(**{k: v[0] for k, v in log.items()})
    a = bootstrap_distribution(est, 300, seed=1)
    np.testing.assert_array_equal(a, bootstrap_distribution(est, 300, seed=1))
    assert not np.array_equal(a, bootstrap_distribution(est, 300, seed=2))
    chunked = bootstrap_distribution(est, 300, seed=1, max_cells=100 * 7)  # 7 per chunk
    np.testing.assert_allclose(a, chunked, rtol=1e-12)  # chunking keeps the random stream


def test_bootstrap_agrees_with_normal_for_a_large_linear_log() -> None:
    log, _ = simulate(WORLD, n=5000, n_logs=1, seed=36)
    est = inverse_probability_weighting(**{k: v[0] for k, v in log.items()})
    boot, norm = bootstrap_interval(est, n_resamples=2000, seed=3), normal_interval(est)
    assert boot.width == pytest.approx(norm.width, rel=0.1)
    assert (boot.lower + boot.upper) / 2 == pytest.approx(est.value, abs=0.1 * norm.width)


def test_batched_normal_interval_equals_per_log() -> None:
    log, _ = simulate(WORLD, n=50, n_logs=4, seed=37)
    batch = normal_interval(inverse_probability_weighting(**log), level=0.9)
    for s in range(4):
        one = normal_interval(inverse_probability_weighting(**{k: v[s] for k, v in log.items()}),
                              level=0.9)
        assert (batch.lower[s], batch.upper[s]) == pytest.approx((one.lower, one.upper))


def test_normal_interval_formula_and_level() -> None:
    log, _ = simulate(WORLD, n=400, n_logs=1, seed=38)
    est = inverse_probability_weighting(**{k: v[0] for k, v in log.items()})
    c = est.contributions
    half = 1.959963984540054 * c.std(ddof=1) / math.sqrt(c.size)
    ci = normal_interval(est)
    assert (ci.lower, ci.upper) == pytest.approx((c.mean() - half, c.mean() + half), rel=1e-12)
    assert normal_interval(est, level=0.8).width < ci.width < normal_interval(est, 0.99).width
    assert compute_interval(est, "normal").upper == ci.upper
    with pytest.raises(ValueError):
        normal_interval(est, level=1.0)
    with pytest.raises(ValueError):
        compute_interval(est, "magic")


def test_empirical_bernstein_formula_on_tiny_sample() -> None:
    x = np.array([0.0, 1.0, 2.0, 1.0])  # mean 1, unbiased variance 2/3, n 4, b 4
    ci = empirical_bernstein_interval(x, upper_bound=4.0, level=0.9)
    log_term = math.log(4 / 0.1)
    half = math.sqrt(2 * (2 / 3) * log_term / 4) + 7 * 4.0 * log_term / (3 * 3)
    assert ci.lower == 0.0  # clipped at the range
    assert ci.upper == pytest.approx(min(4.0, 1 + half))
    big = empirical_bernstein_interval(np.tile(x, 1000), upper_bound=4.0, level=0.9)
    assert big.lower > 0.8 and big.upper < 1.2
    with pytest.raises(ValueError):
        empirical_bernstein_interval(np.array([0.5, 5.0]), upper_bound=4.0)


def test_ipw_bernstein_rejects_other_estimators() -> None:
    log, x = simulate(WORLD, n=50, n_logs=1, seed=39)
    est = self_normalized_inverse_probability_weighting(**{k: v[0] for k, v in log.items()})
    with pytest.raises(ValueError):
        ipw_bernstein_interval(est, r_max=1.0)


def test_class_api_dispatches_bernstein() -> None:
    from bandit.ope.estimators import make_estimator

    log, _ = simulate(WORLD, n=300, n_logs=1, seed=40)
    one = {k: v[0] for k, v in log.items()}
    ipw = make_estimator("ips")
    ci = ipw.estimate_interval(method="bernstein", r_max=1.0, max_weight=WORLD.max_weight, **one)
    direct = ipw_bernstein_interval(ipw.estimate(**one), 1.0, WORLD.max_weight)
    assert (ci.lower, ci.upper, ci.method) == (direct.lower, direct.upper, "empirical-bernstein")
    with pytest.raises(ValueError):
        ipw.estimate_interval(method="bernstein", **one)  # r_max is required
