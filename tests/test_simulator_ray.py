"""The same grid on Ray and on a process pool gives the same numbers.

Needs the optional 'ray' extra (pip install -e '.[ray]'); CI installs it."""

from __future__ import annotations

import pandas as pd
import pytest

from simulator.experiments import comparable, run_grid

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed")


def test_local_ray_matches_process_pool():
    args = (["vw", "uniform", "oracle"], ["trend-shock", "cold-start"], [0, 1], 150)
    pool = run_grid(*args, workers=2)
    on_ray = run_grid(*args, workers=2, ray=True)
    assert not ray.is_initialized(), "a Ray the grid started is shut down"
    assert len(on_ray.summary) == 12
    pd.testing.assert_frame_equal(comparable(pool.summary), comparable(on_ray.summary))
    key = ["scenario", "seed", "policy", "decision", "slot"]
    a = pool.records.sort_values(key).reset_index(drop=True)
    b = on_ray.records.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_categorical=False)
