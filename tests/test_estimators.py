"""Off-policy estimators against exact ground truth and loop references.

Synthetic worlds have finitely many contexts, a known expected-reward table
q(x, a), logging policy mu(a|x) and target pi(a|x), so the true target value
sum_x p(x) sum_a pi(a|x) q(x, a) is exact. Many logs are simulated at once as
a (logs, n) batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

from bandit.ope.estimators import ESTIMATORS, DirectMethod, DoublyRobustWithShrinkage, SwitchDoublyRobust, direct_method, doubly_robust, doubly_robust_with_shrinkage, inverse_probability_weighting, make_estimator, self_normalized_doubly_robust, self_normalized_inverse_probability_weighting, switch_doubly_robust
from bandit.ope.estimate import EstimationRefused, RefusalReason
from bandit.ope.crossfit import cross_fit_rewards
from bandit.ope.diagnostics import diagnose
from bandit.ope.page import page_estimate, per_slot_estimate
from bandit.ope.slate import slate_independent_ips, slate_pseudo_inverse, slate_standard_ips

# --------------------------------------------------------------------------- worlds


@dataclass(frozen=True)
class World:
    p_x: np.ndarray  # (X,)
    q: np.ndarray  # (X, A) expected reward
    mu: np.ndarray  # (X, A) logging policy
    pi: np.ndarray  # (X, A) target policy
    mask: np.ndarray  # (X, A) actions available (ragged candidate sets)

    @property
    def value(self) -> float:
        return float(self.p_x @ (self.pi * self.q).sum(axis=1))


def _softmax(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    e = np.where(mask, np.exp(z - z.max(axis=1, keepdims=True)), 0.0)
    return e / e.sum(axis=1, keepdims=True)


def make_world(seed: int, n_contexts: int = 5, n_actions: int = 4) -> World:
    """Ragged world: context 0 lacks the last action, context 1 the last two."""
    rng = np.random.default_rng(seed)
    mask = np.ones((n_contexts, n_actions), dtype=bool)
    mask[0, -1] = False
    mask[1, -2:] = False
    q = rng.uniform(0.1, 0.9, mask.shape)
    mu = _softmax(rng.normal(size=q.shape), mask)
    pi = _softmax(2.0 * q + rng.normal(size=q.shape), mask)
    return World(rng.dirichlet(np.full(n_contexts, 5.0)), q, mu, pi, mask)


def _sample(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of probs (..., A), by inverse CDF."""
    u = rng.random(probs.shape[:-1] + (1,))
    idx = (u > probs.cumsum(axis=-1)).sum(axis=-1)
    return np.minimum(idx, probs.shape[-1] - 1)


def simulate(world: World, n: int, n_logs: int, seed: int) -> tuple[dict, np.ndarray]:
    """(log arrays with shape (n_logs, n[, A]), contexts) for Bernoulli rewards."""
    rng = np.random.default_rng(seed)
    x = rng.choice(world.p_x.size, p=world.p_x, size=(n_logs, n))
    a = _sample(rng, world.mu[x])
    assert world.mask[x, a].all()
    r = (rng.random((n_logs, n)) < world.q[x, a]).astype(float)
    log = dict(reward=r, action=a, pscore=world.mu[x, a], action_dist=world.pi[x],
               action_mask=world.mask[x])
    return log, x


WORLD = make_world(2)
TRUTH = WORLD.value
Q_FIXED = np.clip(WORLD.q + np.random.default_rng(99).normal(0, 0.2, WORLD.q.shape), 0, 1)


def assert_unbiased(errors: np.ndarray, k: float = 3.0) -> None:
    se = errors.std(ddof=1) / math.sqrt(errors.size)
    assert abs(errors.mean()) < k * se, (errors.mean(), se)


# --------------------------------------------------------------------------- unbiasedness


UNBIASED = {
    "ipw": lambda log, x: inverse_probability_weighting(**log),
    "dm-true-q": lambda log, x: direct_method(action_dist=log["action_dist"],
                                              estimated_rewards=WORLD.q[x]),
    "dr-fixed-q": lambda log, x: doubly_robust(**log, estimated_rewards=Q_FIXED[x]),
    "dr-wrong-q": lambda log, x: doubly_robust(**log, estimated_rewards=1 - WORLD.q[x]),
}


@pytest.mark.parametrize("name", sorted(UNBIASED))
def test_unbiased_estimators_mean_error_within_3se(name: str) -> None:
    log, x = simulate(WORLD, n=100, n_logs=4000, seed=11)
    est = UNBIASED[name](log, x)
    assert_unbiased(np.asarray(est.value) - TRUTH)


def test_dr_with_cross_fitted_model_is_unbiased() -> None:
    log, x = simulate(WORLD, n=200, n_logs=500, seed=12)
    features = np.eye(WORLD.p_x.size)[x]  # one-hot contexts
    errors = []
    for s in range(x.shape[0]):
        one = {k: v[s] for k, v in log.items()}
        fit = cross_fit_rewards(features[s], one["action"], one["reward"],
                                n_actions=WORLD.q.shape[1], n_folds=5, seed=s)
        errors.append(doubly_robust(**one, estimated_rewards=fit.estimated_rewards).value - TRUTH)
    assert_unbiased(np.array(errors))


@pytest.mark.parametrize("name", ["snipw", "sndr"])
def test_self_normalised_bias_shrinks_with_n(name: str) -> None:
    def errors(n: int, n_logs: int) -> np.ndarray:
        log, x = simulate(WORLD, n=n, n_logs=n_logs, seed=n)
        est = make_estimator(name).estimate(**log, estimated_rewards=Q_FIXED[x])
        return np.asarray(est.value) - TRUTH

    small, large = errors(10, 40_000), errors(1000, 1000)
    se_small = small.std(ddof=1) / math.sqrt(small.size)
    assert abs(small.mean()) > 3 * se_small  # O(1/n) bias is visible at n = 10 ...
    assert_unbiased(large)  # ... and gone (within noise) at n = 1000
    assert abs(large.mean()) < abs(small.mean()) / 2


def test_logging_policy_on_own_log_equals_mean_reward() -> None:
    log, x = simulate(WORLD, n=500, n_logs=3, seed=13)
    log = dict(log, action_dist=WORLD.mu[x])
    mean_reward = log["reward"].mean(axis=-1)
    np.testing.assert_allclose(inverse_probability_weighting(**log).value, mean_reward, rtol=1e-12)
    np.testing.assert_allclose(
        self_normalized_inverse_probability_weighting(**log).value, mean_reward, rtol=1e-12
    )


def test_hyperparameter_limits_reduce_to_dr_and_dm() -> None:
    log, x = simulate(WORLD, n=300, n_logs=2, seed=14)
    full = dict(log, estimated_rewards=Q_FIXED[x])
    dr = doubly_robust(**full).value
    dm = direct_method(**full).value
    np.testing.assert_allclose(switch_doubly_robust(**full).value, dr, rtol=1e-12)
    np.testing.assert_allclose(doubly_robust_with_shrinkage(**full).value, dr, rtol=1e-12)
    np.testing.assert_allclose(SwitchDoublyRobust(lambda_=0.0).estimate(**full).value, dm)
    np.testing.assert_allclose(DoublyRobustWithShrinkage(lambda_=0.0).estimate(**full).value, dm)


# --------------------------------------------------------------------------- loop references


def _w(i: int, log: dict) -> float:
    return log["action_dist"][i][log["action"][i]] / log["pscore"][i]


def _q_pi(i: int, log: dict, q: np.ndarray) -> float:
    total = 0.0
    for a in range(len(log["action_dist"][i])):
        if log["action_dist"][i][a] > 0:
            total += log["action_dist"][i][a] * q[i][a]
    return total


def _linearised(values: list[float], weights: list[float], ratio: float) -> list[float]:
    mean_w = sum(weights) / len(weights)
    return [ratio + (v - ratio * w) / mean_w for v, w in zip(values, weights)]


def ref_dm(log: dict, q: np.ndarray, **_: float) -> list[float]:
    return [_q_pi(i, log, q) for i in range(len(log["reward"]))]


def ref_ipw(log: dict, q: np.ndarray, clip: float = math.inf) -> list[float]:
    return [min(_w(i, log), clip) * log["reward"][i] for i in range(len(log["reward"]))]


def ref_snipw(log: dict, q: np.ndarray) -> list[float]:
    w = [_w(i, log) for i in range(len(log["reward"]))]
    wr = [wi * r for wi, r in zip(w, log["reward"])]
    return _linearised(wr, w, sum(wr) / sum(w))


def _ref_dr_shrunk(log: dict, q: np.ndarray, shrink: Callable[[float], float]) -> list[float]:
    out = []
    for i in range(len(log["reward"])):
        resid = log["reward"][i] - q[i][log["action"][i]]
        out.append(_q_pi(i, log, q) + shrink(_w(i, log)) * resid)
    return out


def ref_dr(log: dict, q: np.ndarray, clip: float = math.inf) -> list[float]:
    return _ref_dr_shrunk(log, q, lambda w: min(w, clip))


def ref_switch(log: dict, q: np.ndarray, lam: float) -> list[float]:
    return _ref_dr_shrunk(log, q, lambda w: w if w <= lam else 0.0)


def ref_dros(log: dict, q: np.ndarray, lam: float) -> list[float]:
    return _ref_dr_shrunk(log, q, lambda w: lam * w / (w * w + lam))


def ref_sndr(log: dict, q: np.ndarray) -> list[float]:
    n = len(log["reward"])
    w = [_w(i, log) for i in range(n)]
    resid = [w[i] * (log["reward"][i] - q[i][log["action"][i]]) for i in range(n)]
    lin = _linearised(resid, w, sum(resid) / sum(w))
    return [_q_pi(i, log, q) + lin[i] for i in range(n)]


REFERENCE_CASES = [
    ("dm", direct_method, ref_dm, {}),
    ("ipw", inverse_probability_weighting, ref_ipw, {}),
    ("ipw-clip", lambda **k: inverse_probability_weighting(clip=2.0, **k), ref_ipw, {"clip": 2.0}),
    ("snipw", self_normalized_inverse_probability_weighting, ref_snipw, {}),
    ("dr", doubly_robust, ref_dr, {}),
    ("dr-clip", lambda **k: doubly_robust(clip=1.5, **k), ref_dr, {"clip": 1.5}),
    ("sndr", self_normalized_doubly_robust, ref_sndr, {}),
    ("switch-dr", lambda **k: switch_doubly_robust(lambda_=2.0, **k), ref_switch, {"lam": 2.0}),
    ("dr-os", lambda **k: doubly_robust_with_shrinkage(lambda_=3.0, **k), ref_dros, {"lam": 3.0}),
]


@pytest.mark.parametrize("name,fast,slow,kw", REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES])
def test_vectorised_matches_loop_reference(name, fast, slow, kw) -> None:
    log, x = simulate(WORLD, n=60, n_logs=1, seed=15)
    log = {k: v[0] for k, v in log.items()}
    q = Q_FIXED[x[0]].copy()
    q[~log["action_mask"]] = np.nan  # padded cells must never be read
    est = fast(**log, estimated_rewards=q)
    ref = slow({k: v.tolist() for k, v in log.items()}, q.tolist(), **kw)
    np.testing.assert_allclose(est.contributions, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(est.value, sum(ref) / len(ref), rtol=1e-9)


def test_batched_equals_per_log() -> None:
    log, x = simulate(WORLD, n=40, n_logs=3, seed=16)
    for name in ESTIMATORS:
        batch = make_estimator(name).estimate(**log, estimated_rewards=Q_FIXED[x])
        for s in range(3):
            one = make_estimator(name).estimate(
                **{k: v[s] for k, v in log.items()}, estimated_rewards=Q_FIXED[x[s]]
            )
            np.testing.assert_allclose(batch.value[s], one.value, rtol=1e-12)
            np.testing.assert_allclose(batch[s].contributions, one.contributions, rtol=1e-12)


def test_class_api_and_registry_aliases() -> None:
    assert type(make_estimator("IPS")) is type(make_estimator("ipw"))
    assert type(make_estimator("snips")) is type(make_estimator("SNIPW"))
    log, x = simulate(WORLD, n=50, n_logs=1, seed=17)
    log = dict({k: v[0] for k, v in log.items()}, estimated_rewards=Q_FIXED[x[0]])
    dr = make_estimator("dr")
    assert dr.estimate_policy_value(**log) == pytest.approx(dr.estimate_round_rewards(**log).mean())
    ci = dr.estimate_interval(method="bootstrap", n_resamples=200, seed=1, **log)
    assert ci.lower < dr.estimate_policy_value(**log) < ci.upper
    with pytest.raises(KeyError):
        make_estimator("nope")


# --------------------------------------------------------------------------- refusals

_GOOD = dict(
    reward=np.array([1.0, 0.0, 1.0]),
    action=np.array([0, 1, 1]),
    pscore=np.array([0.5, 0.25, 0.8]),
    action_dist=np.array([[0.5, 0.5], [0.1, 0.9], [0.3, 0.7]]),
    estimated_rewards=np.full((3, 2), 0.5),
)
BAD_PSCORES = {
    RefusalReason.MISSING_PSCORE: None,
    RefusalReason.NAN_PSCORE: [0.5, np.nan, 0.8],
    RefusalReason.ZERO_PSCORE: [0.5, 0.0, 0.8],
    RefusalReason.NEGATIVE_PSCORE: [0.5, -0.25, 0.8],
    RefusalReason.PSCORE_ABOVE_ONE: [0.5, 1.25, 0.8],
    RefusalReason.DETERMINISTIC_LOGGER: [1.0, 1.0, 1.0],
}
IPS_FAMILY = [name for name in ESTIMATORS if name != "dm"]


@pytest.mark.parametrize("reason", list(BAD_PSCORES), ids=lambda r: r.value)
@pytest.mark.parametrize("name", IPS_FAMILY)
def test_ips_family_refuses_bad_propensities(name: str, reason: RefusalReason) -> None:
    with pytest.raises(EstimationRefused) as info:
        make_estimator(name).estimate(**dict(_GOOD, pscore=BAD_PSCORES[reason]))
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_none_entry_in_pscore_list_is_refused_as_nan() -> None:
    with pytest.raises(EstimationRefused) as info:
        inverse_probability_weighting(**dict(_GOOD, pscore=[0.5, None, 0.8]))
    assert info.value.reason == "nan_pscore"


@pytest.mark.parametrize("reason", list(BAD_PSCORES), ids=lambda r: r.value)
def test_dm_works_without_usable_propensities(reason: RefusalReason) -> None:
    est = DirectMethod().estimate(**dict(_GOOD, pscore=BAD_PSCORES[reason]))
    assert est.value == pytest.approx(0.5)


def test_dr_refuses_without_reward_model() -> None:
    with pytest.raises(EstimationRefused) as info:
        doubly_robust(**dict(_GOOD, estimated_rewards=None))
    assert info.value.reason == RefusalReason.MISSING_REWARD_MODEL


def test_slate_estimators_refuse_bad_propensities() -> None:
    for fn in (slate_standard_ips, slate_pseudo_inverse):
        with pytest.raises(EstimationRefused) as info:
            fn(reward=np.ones(2), pscore=np.array([[0.5, 0.0], [0.5, 0.5]]),
               target_pscore=np.full((2, 2), 0.5))
        assert info.value.reason == RefusalReason.ZERO_PSCORE


# --------------------------------------------------------------------------- diagnostics


def test_diagnostics_match_hand_computation() -> None:
    dist = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    mask = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]], dtype=bool)
    action, pscore = np.array([0, 1, 0, 2]), np.array([0.25, 0.5, 0.5, 1.0])
    # weights: 0.5/0.25=2, 0.3/0.5=0.6, 1/0.5=2, 0.5/1=0.5 -> sum 5.1, sum sq 8.61
    d = diagnose(action=action, pscore=pscore, action_dist=dist, action_mask=mask)
    assert d.n == 4
    assert d.effective_sample_size == pytest.approx(5.1**2 / 8.61, rel=1e-12)
    assert d.max_weight == pytest.approx(2.0)
    assert d.mean_weight == pytest.approx(5.1 / 4)
    assert d.support_deficiency == pytest.approx(1 / 4)  # round 1: 0.5 on masked action 2
    assert d.unsupported_mass == pytest.approx(0.5 / 4)
    logging = np.array([[0.25, 0.75, 0], [0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]])
    d2 = diagnose(action=action, pscore=pscore, action_dist=dist, action_mask=mask,
                  logging_dist=logging)  # round 3: target 0.5 on action 1, logger 0
    assert d2.support_deficiency == pytest.approx(2 / 4)
    assert d2.unsupported_mass == pytest.approx(1.0 / 4)


def test_diagnostics_allow_deterministic_logger_and_flag_uniform_weights() -> None:
    dist = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    d = diagnose(action=np.array([0, 1, 0]), pscore=np.ones(3), action_dist=dist)
    assert (d.effective_sample_size, d.max_weight, d.mean_weight) == (3.0, 1.0, 1.0)


# --------------------------------------------------------------------------- cross-fitting


class _Memoriser:
    """A 'model' that remembers its training rows: predicts 1 for a row it was
    fit on and 0 otherwise -- leakage shows up as a 1."""

    @staticmethod
    def fit(design: np.ndarray, y: np.ndarray) -> set[bytes]:
        return {row.tobytes() for row in design}

    @staticmethod
    def predict(seen: set[bytes], design: np.ndarray) -> np.ndarray:
        return np.array([float(row.tobytes() in seen) for row in design])


@pytest.mark.parametrize("per_action", [False, True])
def test_cross_fit_never_predicts_a_round_from_a_model_fit_on_it(per_action: bool) -> None:
    rng = np.random.default_rng(18)
    n, d, n_act = 90, 3, 4
    feats = rng.normal(size=(n, n_act, d) if per_action else (n, d))  # unique rows
    action = rng.integers(0, n_act, n)
    out = cross_fit_rewards(feats, action, rng.random(n), n_actions=n_act, n_folds=3, seed=5,
                            fit=_Memoriser.fit, predict=_Memoriser.predict)
    assert out.estimated_rewards.shape == (n, n_act)
    assert (out.estimated_rewards == 0).all()  # never seen its own (or any own) row
    assert sorted(np.bincount(out.fold)) == [30, 30, 30]
    # positive control: the detector does fire when a model is fit on the round itself
    from bandit.ope.crossfit import interaction_design

    design = interaction_design(feats, action, n_act)
    assert (_Memoriser.predict(_Memoriser.fit(design, np.zeros(n)), design) == 1).all()


def test_cross_fit_prediction_ignores_own_reward() -> None:
    """Changing one round's reward leaves that round's predictions unchanged."""
    rng = np.random.default_rng(19)
    feats, action, reward = rng.normal(size=(80, 2)), rng.integers(0, 3, 80), rng.random(80)
    base = cross_fit_rewards(feats, action, reward, n_folds=4, seed=3)
    bumped = cross_fit_rewards(feats, action, np.where(np.arange(80) == 7, 100.0, reward),
                               n_folds=4, seed=3)
    np.testing.assert_array_equal(base.estimated_rewards[7], bumped.estimated_rewards[7])
    assert not np.allclose(base.estimated_rewards, bumped.estimated_rewards)


def test_cross_fit_ridge_recovers_reward_table() -> None:
    log, x = simulate(WORLD, n=20_000, n_logs=1, seed=20)
    fit = cross_fit_rewards(np.eye(WORLD.p_x.size)[x[0]], log["action"][0], log["reward"][0],
                            n_actions=WORLD.q.shape[1], seed=0)
    err = np.abs(fit.estimated_rewards - WORLD.q[x[0]])[log["action_mask"][0]]
    assert err.max() < 0.1


# --------------------------------------------------------------------------- slates


@dataclass(frozen=True)
class SlateWorld:
    """K slots with their own actions; independent per-slot policies;
    additive Bernoulli slot rewards q_k(x, a_k)."""

    p_x: np.ndarray  # (X,)
    q: np.ndarray  # (K, X, A)
    mu: np.ndarray  # (K, X, A)
    pi: np.ndarray  # (K, X, A)

    @property
    def value(self) -> float:
        return float(np.einsum("x,kxa,kxa->", self.p_x, self.pi, self.q))


def make_slate_world(seed: int, k: int = 3, n_contexts: int = 4, n_actions: int = 3) -> SlateWorld:
    rng = np.random.default_rng(seed)
    shape = (k, n_contexts, n_actions)
    q = rng.uniform(0.05, 0.6, shape)
    mu = rng.dirichlet(np.full(n_actions, 2.0), size=shape[:2])
    pi = rng.dirichlet(np.full(n_actions, 1.0), size=shape[:2])
    return SlateWorld(rng.dirichlet(np.full(n_contexts, 3.0)), q, mu, pi)


def simulate_slates(world: SlateWorld, n: int, n_logs: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.choice(world.p_x.size, p=world.p_x, size=(n_logs, n))
    mu_x = np.moveaxis(world.mu[:, x], 0, -2)  # (S, n, K, A)
    a = _sample(rng, mu_x)  # (S, n, K)
    slots = np.arange(world.q.shape[0])
    q_logged = world.q[slots, x[..., None], a]
    slot_reward = (rng.random(a.shape) < q_logged).astype(float)
    take = lambda arr: np.take_along_axis(arr, a[..., None], -1)[..., 0]  # noqa: E731
    pi_x = np.moveaxis(world.pi[:, x], 0, -2)
    return dict(slot_reward=slot_reward, action=a, pscore=take(mu_x), target_pscore=take(pi_x),
                action_dist=pi_x)


SLATE_WORLD = make_slate_world(3)


@pytest.mark.parametrize("name", ["pi", "iips", "sips"])
def test_slate_estimators_unbiased(name: str) -> None:
    logs = simulate_slates(SLATE_WORLD, n=100, n_logs=3000, seed=21)
    page = logs["slot_reward"].sum(axis=-1)
    fn = {"pi": slate_pseudo_inverse, "iips": slate_independent_ips, "sips": slate_standard_ips}
    reward = logs["slot_reward"] if name == "iips" else page
    est = fn[name](reward=reward, pscore=logs["pscore"], target_pscore=logs["target_pscore"])
    assert_unbiased(np.asarray(est.value) - SLATE_WORLD.value)


def _ref_slate(reward: list, pscore: list, target: list, kind: str) -> list[float]:
    out = []
    for r, p, t in zip(reward, pscore, target):
        w = [ti / pi for ti, pi in zip(t, p)]
        if kind == "sips":
            out.append(math.prod(w) * sum(r))
        elif kind == "iips":
            out.append(sum(wk * rk for wk, rk in zip(w, r)))
        else:
            out.append((sum(w) - (len(w) - 1)) * sum(r))
    return out


@pytest.mark.parametrize("kind", ["sips", "iips", "pi"])
def test_slate_estimators_match_loop_reference(kind: str) -> None:
    logs = simulate_slates(SLATE_WORLD, n=50, n_logs=1, seed=22)
    r, p, t = logs["slot_reward"][0], logs["pscore"][0], logs["target_pscore"][0]
    fn = {"pi": slate_pseudo_inverse, "iips": slate_independent_ips, "sips": slate_standard_ips}
    est = fn[kind](reward=r, pscore=p, target_pscore=t)
    ref = _ref_slate(r.tolist(), p.tolist(), t.tolist(), kind)
    np.testing.assert_allclose(est.contributions, ref, rtol=1e-9, atol=1e-12)


def test_per_slot_and_page_value() -> None:
    logs = simulate_slates(SLATE_WORLD, n=200, n_logs=2000, seed=23)
    per_slot = per_slot_estimate(
        inverse_probability_weighting, reward=logs["slot_reward"], action=logs["action"],
        pscore=logs["pscore"], action_dist=logs["action_dist"],
    )
    assert per_slot.batch_shape == (2000, 3)
    page = page_estimate(per_slot)
    iips = slate_independent_ips(reward=logs["slot_reward"], pscore=logs["pscore"],
                                 target_pscore=logs["target_pscore"])
    np.testing.assert_allclose(page.value, iips.value, rtol=1e-12)  # same estimator, two routes
    truth_per_slot = np.einsum("x,kxa,kxa->k", SLATE_WORLD.p_x, SLATE_WORLD.pi, SLATE_WORLD.q)
    for k in range(3):
        assert_unbiased(per_slot.value[:, k] - truth_per_slot[k])
    assert_unbiased(np.asarray(page.value) - SLATE_WORLD.value)


def test_page_estimate_keeps_self_normalised_ratios_per_slot() -> None:
    logs = simulate_slates(SLATE_WORLD, n=100, n_logs=1, seed=24)
    one = {k: v[0] for k, v in logs.items()}
    per_slot = per_slot_estimate(
        make_estimator("snipw"), reward=one["slot_reward"], action=one["action"],
        pscore=one["pscore"], action_dist=one["action_dist"],
    )
    page = page_estimate(per_slot)
    assert page.value == pytest.approx(float(np.sum(per_slot.value)), rel=1e-12)
    assert page.contributions.mean() == pytest.approx(page.value, rel=1e-12)
    assert page.reweighted(np.ones((1, 100)))[0] == pytest.approx(page.value, rel=1e-12)
    assert page.num.shape == (3, 100)


def test_single_available_action_is_not_a_deterministic_logger():
    """The last slot of a page with as many slots as collections has one
    collection left: propensity 1 there says nothing about the logger."""
    from bandit.ope.estimators import inverse_probability_weighting

    rng = np.random.default_rng(3)
    n = 200
    mask = np.zeros((n, 3), bool)
    mask[:, 1] = True  # only action 1 was available
    dist = np.zeros((n, 3))
    dist[:, 1] = 1.0
    reward = rng.random(n)
    est = inverse_probability_weighting(reward=reward, action=np.ones(n, int), pscore=np.ones(n),
                                        action_dist=dist, action_mask=mask)
    assert est.value == pytest.approx(reward.mean())
    mask[:, 2] = True  # now two were available yet the logger always took one: refuse
    with pytest.raises(EstimationRefused):
        inverse_probability_weighting(reward=reward, action=np.ones(n, int), pscore=np.ones(n),
                                      action_dist=dist, action_mask=mask)
