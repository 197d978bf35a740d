"""A cheap guard on the engine's default learning quality (issue 14.4).

The measured numbers (100k decisions, peers side by side) live in
BENCHMARKS.md and bench/quality.py; this only catches a default that stops
learning: 4 seeds x 1,500 decisions of seasonal-retail, where the default
reached 61.5-71.4 % of the oracle's expected reward over 20 seeds
(bench.defaults_grid) and uniform placement reaches ~32 %.
"""

from __future__ import annotations

import pytest

from simulator.runner import run

SEEDS = (0, 1, 2, 3)
DECISIONS = 1500


@pytest.fixture(scope="module")
def shares() -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for policy in ("vw", "uniform"):
        for seed in SEEDS:
            s = run("seasonal-retail", policy, seed, DECISIONS).summary
            out.setdefault(policy, []).append(s["expected_reward"] / s["oracle_reward"])
    return out


def test_default_engine_learns_well_past_uniform(shares):
    engine, uniform = shares["vw"], shares["uniform"]
    assert max(uniform) < 0.4
    assert min(engine) > 0.55  # a learner that does not learn stays near uniform's ~0.32
    assert sum(engine) / len(engine) > 0.6
