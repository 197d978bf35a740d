"""The replay's margin notes (issue 13 point 5): each warning appears in the
situation it is about -- and none appears for a well-explored target."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from simulator.replay.estimation import evaluate_policy
from simulator.replay.logarrays import ReplayLog
from simulator.replay.options import EstimationConfig
from simulator.replay.reward_model import reward_model

from replay_world import make_events

CFG = EstimationConfig(estimators=("dm", "ips", "snips", "dr"), slate=(), intervals=("normal",))


def _log(n: int, logger, seed: int = 1) -> ReplayLog:
    return ReplayLog.from_events(make_events(n, seed=seed, logger=logger, n_slots=1))


def _dist(log: ReplayLog, probs: dict[int, float]) -> np.ndarray:
    """A fixed target over the candidate indices (all four available in slot 0)."""
    dist = np.zeros(log.shape)
    for a, p in probs.items():
        dist[:, 0, a] = p
    return dist


def _kinds(log: ReplayLog, dist: np.ndarray, cfg: EstimationConfig = CFG) -> dict[str, list[str]]:
    result = evaluate_policy(log, dist, reward_model(log), cfg)
    out: dict[str, list[str]] = {}
    for w in result["warnings"]:
        out.setdefault(w["kind"], []).append(w["message"])
    return out


def skewed(weights: Sequence[float]):
    def logger(seg: str, k: int, avail: Sequence[int]) -> dict[int, float]:
        total = sum(weights[a] for a in avail)
        return {a: weights[a] / total for a in avail}
    return logger


def test_a_clean_case_has_no_warnings() -> None:
    log = _log(3000, skewed([1, 1, 1, 1]))
    assert _kinds(log, _dist(log, {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25})) == {}


def test_low_ess_and_extrapolation_for_a_target_on_what_the_logger_rarely_shows() -> None:
    log = _log(3000, skewed([200, 200, 200, 1]))  # c3 shown with p ~ 0.002: a handful of times
    kinds = _kinds(log, _dist(log, {3: 1.0}))
    assert "low_ess" in kinds and "effective sample size" in kinds["low_ess"][0]
    assert "extrapolation" in kinds and "mostly extrapolation" in kinds["extrapolation"][0]


def test_one_decision_carrying_the_weight() -> None:
    # c3 logged with p = 1/301: about once in 400 decisions; take the first log where it is shown 1-3 times
    log = next(lg for lg in (_log(400, skewed([100, 100, 100, 1]), seed=s) for s in range(50))
               if 1 <= int((lg.action[:, 0] == 3).sum()) <= 3)
    kinds = _kinds(log, _dist(log, {0: 0.9, 3: 0.1}))
    assert "max_weight_share" in kinds and "of the total importance weight" in kinds["max_weight_share"][0]


def test_target_mass_where_the_logger_could_not_go() -> None:
    log = _log(3000, skewed([1, 1, 1, 0]))  # the logger never gives c3 any probability
    kinds = _kinds(log, _dist(log, {0: 0.5, 3: 0.5}))
    assert "support_deficiency" in kinds and "50%" in kinds["support_deficiency"][0]


def test_estimators_whose_intervals_do_not_overlap() -> None:
    log = _log(3000, skewed([1, 1, 1, 1]))
    cfg = EstimationConfig(estimators=("dm", "ips"), slate=(), intervals=("normal",))
    q = np.full(log.shape, 0.9)  # a reward model far above every click rate
    result = evaluate_policy(log, _dist(log, {0: 1.0}), q, cfg)
    kinds = {w["kind"] for w in result["warnings"]}
    assert "estimators_disagree" in kinds
    msg = next(w["message"] for w in result["warnings"] if w["kind"] == "estimators_disagree")
    assert "DM [" in msg and "IPS [" in msg
    # the same target with the fitted model: DM and IPS agree
    again = evaluate_policy(log, _dist(log, {0: 1.0}), reward_model(log), cfg)
    assert "estimators_disagree" not in {w["kind"] for w in again["warnings"]}


@pytest.mark.parametrize("seed", range(5))
def test_uniform_target_on_a_well_explored_log_stays_clean_over_seeds(seed: int) -> None:
    log = _log(2000, skewed([3, 2, 1, 1]), seed=100 + seed)
    assert _kinds(log, _dist(log, {a: 0.25 for a in range(4)})) == {}
