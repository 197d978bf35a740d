"""Replay's VW fan-out on Ray gives the same numbers as on the process pool.

Needs the optional 'ray' extra (pip install -e '.[ray]'); CI installs it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from simulator.replay.options import EstimationConfig, ReplayOptions
from simulator import fanout
from simulator.replay.progressive import ProgressiveTask, run_targets
from simulator.replay.logarrays import ReplayLog
from simulator.replay.pipeline import run_replay
from simulator.commands.replay import replay
from simulator.replay.targets import parse_policy

from replay_world import make_events, write_log

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed")

POLICIES = ("uniform", "vw:algorithm=epsilon,epsilon=0.1,interactions=CA+SA",
            "vw:algorithm=squarecb,learning_rate=0.3,interactions=CA")
CFG = EstimationConfig(estimators=("ips", "snips", "dr"), slate=("iips",), intervals=("normal", "bootstrap"),
                       n_bootstrap=200, seed=3)


@pytest.fixture(scope="module")
def log() -> ReplayLog:
    return ReplayLog.from_events(make_events(300, seed=11))


def _numbers(results: dict) -> str:
    """Every number of a replay, as canonical JSON (no timing in it)."""
    return json.dumps(results["policies"], sort_keys=True, default=float)


def test_two_vw_targets_give_identical_numbers_on_ray_and_on_the_process_pool(log):
    pool = run_replay(log, ReplayOptions(policies=POLICIES, estimation=CFG, workers=2))
    on_ray = run_replay(log, ReplayOptions(policies=POLICIES, estimation=CFG, workers=2, ray=True))
    assert not ray.is_initialized(), "a Ray the replay started is shut down"
    assert [p["name"] for p in on_ray["policies"]] == [p["name"] for p in pool["policies"]]
    assert _numbers(on_ray) == _numbers(pool)
    vw = [p for p in pool["policies"] if p["kind"] == "vw"]
    assert len(vw) == 2 and all(any(e["scope"] == "page" and "value" in e for e in p["estimates"]) for p in vw)


def test_run_targets_distributions_are_bitwise_equal(log):
    tasks = [ProgressiveTask(parse_policy(p)) for p in POLICIES]
    pool = run_targets(log, tasks, workers=2)
    with fanout.using(fanout.FanOut(2, ray=True)):
        on_ray = run_targets(log, tasks)
    assert not ray.is_initialized()
    for a, b in zip(pool, on_ray):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(on_ray[1], on_ray[2]), "the two VW settings learn different policies"


def test_cli_ray_flag(tmp_path):
    path = write_log(tmp_path / "log.dsjson", make_events(120, seed=5))
    app = typer.Typer()
    app.command()(replay)
    out_pool, out_ray = tmp_path / "pool.json", tmp_path / "ray.json"
    args = [str(path), "-p", POLICIES[1], "-p", POLICIES[2], "-e", "dr", "--interval", "normal", "--slate", "none",
            "--workers", "2", "--quiet"]
    res = CliRunner().invoke(app, [*args, "-j", str(out_pool)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, [*args, "--ray", "-j", str(out_ray)])
    assert res.exit_code == 0, res.output
    assert _numbers(json.loads(out_ray.read_text())) == _numbers(json.loads(out_pool.read_text()))
