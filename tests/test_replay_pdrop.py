"""Off-policy estimates on a subsampled joined log (rows kept with probability
1 - pdrop, VW's DSJSON field) against exact ground truth, over seeds: each
kept row weighs 1 / (1 - pdrop), so the estimates agree with the truth and
with the full log; without the weights they are biased."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bandit.logformat import columnar

from bandit.ope.estimate import subsampled
from bandit.ope.estimators import inverse_probability_weighting
from bandit.ope.intervals import bootstrap_interval, normal_interval
from simulator.replay.logarrays import load_log
from simulator.replay.options import EstimationConfig, ReplayOptions
from simulator.replay.pipeline import run_replay

from replay_world import _BEST, SLOTS, conditional_value, joint_value, make_events, uniform_policy, write_log

CONFIG = EstimationConfig(estimators=("ips", "snips", "dr"), slate=("sips",), intervals=("normal",), seed=3)
SEEDS = range(12)


def _keep_rate(event) -> float:
    """Rows whose top slot shows the segment's best collection (mostly clicks)
    are all kept, the others one in five: a subsample that, unweighted, makes
    the logging policy look far better than it was."""
    seg = event.decision.inp.context[0].features["segment"]
    return 1.0 if event.decision.choices[0].action == _BEST[(seg, SLOTS[0])] else 0.2


def _subsample(events, seed: int):
    rng = np.random.default_rng(1000 + seed)
    kept = []
    for e in events:
        rate = _keep_rate(e)
        if rng.random() < rate:
            kept.append(replace(e, pdrop=1.0 - rate))
    return kept


def _page(results: dict, estimator: str) -> dict:
    [policy] = results["policies"]
    return next(e for e in policy["estimates"] if e["estimator"] == estimator and e["scope"] == "page")


def _estimates(tmp_path, name: str, events) -> dict[str, dict]:
    log = write_log(tmp_path / f"{name}.dsjson", events)
    results = run_replay([log], ReplayOptions(policies=("uniform",), estimation=CONFIG))
    return {est: _page(results, est) for est in ("ips", "snips", "dr", "sips")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = []
    for seed in SEEDS:
        root = tmp_path_factory.mktemp(f"pdrop{seed}")
        events = make_events(2000, seed=seed)
        kept = _subsample(events, seed)
        out.append({"full": _estimates(root, "full", events), "kept": _estimates(root, "kept", kept),
                    "unweighted": _estimates(root, "unweighted", [replace(e, pdrop=0.0) for e in kept])})
    return out


@pytest.mark.parametrize("estimator", ["ips", "snips", "dr", "sips"])
def test_weighted_estimates_on_a_subsampled_log_find_the_truth_and_the_full_log(runs, estimator):
    truth = joint_value(uniform_policy) if estimator == "sips" else conditional_value(uniform_policy)
    covered = agree = 0
    errors = []
    for run in runs:
        kept, full = run["kept"][estimator], run["full"][estimator]
        ci = kept["intervals"]["normal"]
        covered += ci["lower"] <= truth <= ci["upper"]
        agree += ci["lower"] <= full["value"] <= ci["upper"]
        errors.append(kept["value"] - truth)
    # 95 % intervals: 10 of 12 or better (P(fewer) < 2 % at the nominal level; SIPS's heavy joint weights
    # make its normal interval the loosest).
    assert covered >= len(runs) - 2 and agree >= len(runs) - 2, (covered, agree)
    # Unbiased: the mean error over seeds is within 3 standard errors of 0.
    assert abs(np.mean(errors)) < 3 * np.std(errors, ddof=1) / np.sqrt(len(errors))


@pytest.mark.parametrize("estimator", ["ips", "snips", "sips"])  # DR's reward model absorbs most of it
def test_without_the_weights_the_same_rows_are_biased(runs, estimator):
    truth = joint_value(uniform_policy) if estimator == "sips" else conditional_value(uniform_policy)
    errors = [run["unweighted"][estimator]["value"] - truth for run in runs]
    assert abs(np.mean(errors)) > 5 * np.std(errors, ddof=1) / np.sqrt(len(errors))


def test_the_log_reader_carries_pdrop_and_a_full_log_is_unchanged(tmp_path):
    events = make_events(300, seed=5)
    kept = _subsample(events, 5)
    path = write_log(tmp_path / "kept.dsjson", kept)
    log = load_log([path])
    assert log.pdrop.tolist() == pytest.approx([e.pdrop for e in sorted(kept, key=lambda e: e.decision.timestamp)])
    assert columnar.current_copy(path) is not None  # the first read wrote the columnar copy ...
    assert load_log([path]).pdrop.tolist() == log.pdrop.tolist()  # ... and it carries pdrop
    full = load_log([write_log(tmp_path / "full.dsjson", events)])
    assert not full.pdrop.any()
    est = inverse_probability_weighting(reward=full.reward[:, 0], action=full.action[:, 0],
                                        pscore=full.pscore[:, 0], action_dist=full.logged_dist[:, 0])
    assert subsampled(est, full.pdrop) is est
    constant = subsampled(est, np.full(full.n, 0.5))  # one rate for every row: the same value and interval
    assert constant.value == pytest.approx(est.value)
    assert normal_interval(constant).upper == pytest.approx(normal_interval(est).upper)
    varying = subsampled(est, np.where(np.arange(full.n) % 2, 0.8, 0.0))
    boot = bootstrap_interval(varying, n_resamples=400, seed=1)
    assert boot.lower < varying.value < boot.upper
