"""The replay's intervals against exact ground truth over many seeded logs:
coverage near nominal, bounded by the reward range, an honest upper bound
from no clicks at all, DM's interval labelled for what it is, and estimates
from few effective samples flagged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from replay_world import COLLECTIONS, conditional_value, make_events, uniform_policy

from simulator.replay.estimation import evaluate_policy
from simulator.replay.logarrays import ReplayLog
from simulator.replay.options import EstimationConfig
from simulator.replay.reward_model import reward_model

CFG = EstimationConfig(estimators=("dm", "ips", "snips", "dr", "sndr"), slate=("sips",), intervals=("normal",))


def _uniform(log: ReplayLog) -> np.ndarray:
    return np.where(log.mask, 1.0, 0.0) / log.mask.sum(axis=-1, keepdims=True)


def _entries(result: dict, estimator: str) -> list[dict]:
    return [e for e in result["estimates"] if e["estimator"] == estimator]


def _page(result: dict, estimator: str) -> dict:
    return next(e for e in _entries(result, estimator) if e["scope"] == "page")


def test_normal_intervals_cover_the_truth_at_close_to_the_nominal_rate():
    truth = conditional_value(uniform_policy)
    seeds = 250
    hits = {est: 0 for est in ("ips", "snips", "dr", "sndr")}
    for seed in range(seeds):
        log = ReplayLog.from_events(make_events(300, seed=5000 + seed))
        result = evaluate_policy(log, _uniform(log), reward_model(log, seed=seed), CFG)
        for est in hits:
            ci = _page(result, est)["intervals"]["normal"]
            hits[est] += ci["lower"] <= truth <= ci["upper"]
    for est, hit in hits.items():
        # 250 logs: the binomial sd of a 95% coverage is 0.014
        assert 0.91 <= hit / seeds <= 0.99, (est, hit / seeds)


def test_dm_interval_is_labelled_as_not_a_confidence_interval():
    log = ReplayLog.from_events(make_events(300, seed=1))
    result = evaluate_policy(log, _uniform(log), reward_model(log), CFG)
    for entry in _entries(result, "dm"):
        ci = entry["intervals"]["normal"]
        assert ci["nominal"] is False and "not a confidence interval" in ci["caveat"], ci
    assert "nominal" not in _page(result, "dr")["intervals"]["normal"]


def _no_clicks(events, keep=lambda e, k: False):
    return [replace(e, rewards=tuple(r if keep(e, k) else 0.0 for k, r in enumerate(e.rewards))) for e in events]


def test_zero_clicks_in_125_give_a_real_upper_bound():
    log = ReplayLog.from_events(_no_clicks(make_events(125, seed=2, n_slots=1)))
    result = evaluate_policy(log, _uniform(log), reward_model(log), CFG)
    for est in ("ips", "snips", "dr", "sndr", "dm", "sips"):
        entry = _page(result, est)
        ci = entry["intervals"]["normal"]
        assert entry["value"] == 0.0 and ci["lower"] == 0.0, (est, entry)
        # Clopper-Pearson for 0 of n: 1 - 0.025^(1/n) is 0.029 at n = 125; the weights make n_eff smaller
        assert ci["upper"] >= 1 - 0.025 ** (1 / 125) - 1e-12, (est, ci)
        assert ci["upper"] < 0.2, (est, ci)


def test_a_target_never_seen_earning_anything_is_not_certain_of_zero():
    """Clicks only ever came from c0; the target always shows c3."""
    events = _no_clicks(make_events(400, seed=3, n_slots=1), keep=lambda e, k: e.decision.choices[k].action == 0)
    log = ReplayLog.from_events(events)
    assert log.reward.sum() > 0
    dist = np.zeros(log.shape)
    dist[:, :, COLLECTIONS.index("c3")] = 1.0
    result = evaluate_policy(log, dist, reward_model(log), CFG)
    ips = _page(result, "ips")
    assert ips["value"] == 0.0
    assert ips["intervals"]["normal"]["upper"] > 0.01, ips


def test_click_rate_intervals_stay_inside_the_reward_range():
    """Rare clicks (1 %) in small logs: no interval of any estimator, slot or
    page, reaches below 0 or above the page's maximum."""
    worst_lower = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        events = [replace(e, rewards=tuple(float(x) for x in rng.random(2) < 0.01))
                  for e in make_events(125, seed=7000 + seed)]
        log = ReplayLog.from_events(events)
        result = evaluate_policy(log, _uniform(log), reward_model(log, seed=seed), CFG)
        for entry in result["estimates"]:
            if "intervals" not in entry:
                continue
            ci = entry["intervals"]["normal"]
            top = 2.0 if entry["scope"] == "page" else 1.0
            assert -1e-12 <= ci["lower"] <= ci["upper"] <= top + 1e-12, (seed, entry)
            worst_lower.append(ci["lower"])
    assert min(worst_lower) == 0.0  # clipping happened: the unclipped bounds went below 0


def test_estimates_from_few_effective_samples_are_flagged():
    log = ReplayLog.from_events(make_events(300, seed=4))
    dist = np.zeros(log.shape)
    dist[:, :, 0] = 1.0  # always the first still-available collection: far from the logger
    for k in range(log.shape[1]):
        for i, allowed in enumerate(log.allowed):
            dist[i, k] = 0.0
            dist[i, k, allowed[k][0]] = 1.0
    result = evaluate_policy(log, dist, reward_model(log), replace(CFG, min_ess=120))
    ips = _page(result, "ips")
    assert ips["ess"] < 120 and any(f.startswith("low_ess") for f in ips["flags"]), ips
    assert _page(result, "dm")["flags"] == []  # DM rests on all 300 decisions
    uniform = evaluate_policy(log, _uniform(log), reward_model(log), CFG)
    assert all(e["flags"] == [] for e in uniform["estimates"] if "flags" in e)
