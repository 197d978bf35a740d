"""Learning that converges and stays converged (issue 14), in the demo world.

The in-process replica of ``placement demo`` (bench/stability.py: the server's
learning path, each decision learned 300 decisions later, a model published
every 200) over 8 seeds x 3,000 decisions with the default settings. Before
the learning-order fix (VW's SquareCB kept the last collection's 1/p weight),
7 or 8 of these 8 seeds had a converged cell flip to a wrong collection, and
2 to 4 ended with a cell below 0.9.
"""

from __future__ import annotations

import pytest

from bandit.vwargs import LearningSettings
from bench.stability import CONVERGED, run_seed

SEEDS = range(8)


@pytest.fixture(scope="module")
def results():
    return [run_seed(seed, LearningSettings(), decisions=3000, lag=300) for seed in SEEDS]


def test_every_cell_ends_converged(results):
    low = {(r.seed, cell): round(p, 3) for r in results for cell, p in r.final.items() if p < CONVERGED}
    assert not low, f"(seed, cell) ending with P(best) < {CONVERGED}: {low}"


def test_no_converged_cell_falls_back(results):
    """Converged: P(best) >= 0.9 at two checkpoints in a row (250 decisions apart)."""
    fell = {r.seed: [(cell, at, round(p, 3)) for cell, at, p in r.fell(settled=2)] for r in results}
    fell = {seed: f for seed, f in fell.items() if f}
    assert not fell, f"converged cells that later fell below P(best) 0.5 (seed: cell, decisions, P): {fell}"
