"""The simulator against its own ground truth: a real VW engine, a real joiner,
real files read back by plain VW. No mocks.

One module-scoped grid (every policy on seasonal-retail, one seed) is shared
by the comparisons so the file stays well under a minute on two cores."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from bandit.logformat.events import read_joined
from simulator.commands.simulate import simulate
from simulator.experiments import comparable, run_grid
from simulator.report import print_results, results_cells, write_report
from simulator.runner import contexts, run, true_value
from simulator.world import ScenarioError, World, builtin_scenarios, load_scenario, scenario_from_dict

N = 2000
SEED = 1
POLICIES = ["vw", "uniform", "greedy-ctr", "rule", "oracle"]
SEASONAL = ["mothers-day", "fathers-day", "summer-sale", "back-to-school"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    result = run_grid(POLICIES, ["seasonal-retail"], [SEED], N, workers=2, log_path=logs / "joined.json")
    return result, logs


def _row(summary: pd.DataFrame, policy: str) -> pd.Series:
    return summary.set_index("policy").loc[policy]


# --- reproducibility -----------------------------------------------------------

def test_same_seed_same_results_different_seed_differs():
    a = run("trend-shock", "vw", seed=3, decisions=300)
    b = run("trend-shock", "vw", seed=3, decisions=300)
    c = run("trend-shock", "vw", seed=4, decisions=300)
    pd.testing.assert_frame_equal(a.records, b.records)
    assert {k: v for k, v in a.summary.items() if k != "seconds"} == \
        {k: v for k, v in b.summary.items() if k != "seconds"}
    assert not a.records["collection"].equals(c.records["collection"])
    assert a.summary["reward"] != c.summary["reward"] or a.summary["expected_reward"] != c.summary["expected_reward"]


def test_request_stream_depends_only_on_seed():
    _, first = contexts("seasonal-retail", 5, 200)
    _, again = contexts("seasonal-retail", 5, 200)
    _, other = contexts("seasonal-retail", 6, 200)
    assert [r.inp for r in first] == [r.inp for r in again]
    assert [r.timestamp for r in first] == [r.timestamp for r in again]
    assert [r.inp for r in first] != [r.inp for r in other]


# --- who wins ------------------------------------------------------------------

def test_oracle_is_best_and_engine_beats_uniform(grid):
    summary = grid[0].summary
    oracle = _row(summary, "oracle")
    for policy in POLICIES:
        row = _row(summary, policy)
        assert oracle["expected_reward"] >= row["expected_reward"] - 1e-9, policy
        assert oracle["reward"] >= row["reward"], policy
        assert row["oracle_reward"] == pytest.approx(oracle["expected_reward"])  # same contexts for all
    engine, uniform = _row(summary, "vw"), _row(summary, "uniform")
    assert engine["expected_reward"] > 1.3 * uniform["expected_reward"]
    assert engine["reward"] > 1.3 * uniform["reward"]
    assert engine["regret"] < 0.7 * uniform["regret"]


def test_every_decision_is_valid(grid):
    records = grid[0].records
    per_decision = records.groupby(["policy", "decision"], observed=True)["collection"]
    assert (per_decision.nunique() == per_decision.size()).all(), "a collection placed twice in one request"
    assert ((records["propensity"] > 0) & (records["propensity"] <= 1)).all()
    assert records["reward"].notna().all(), "every decision was joined"
    late = records[records["collection"] == "summer-essentials"]["day"]
    assert late.min() >= 60 and late.max() < 130  # added and retired mid-run
    assert records[records["collection"] == "spring-cleaning"]["day"].max() < 50


# --- seasonality -----------------------------------------------------------------

def test_seasonal_true_value_peaks_inside_its_window():
    world, requests = contexts("seasonal-retail", SEED, N)
    for cid in SEASONAL:
        inside = [world.expected_reward(r, 0, cid) for r in requests
                  if world.in_window(cid, r.day) and cid in [c.id for c in r.collections]]
        outside = [world.expected_reward(r, 0, cid) for r in requests if not world.in_window(cid, r.day)]
        assert inside and outside
        assert np.mean(inside) > 2 * np.mean(outside), cid


def test_engine_share_follows_the_season(grid):
    """Over seeds: one seed's share of one collection is noisy at 2,000
    decisions (seed 1's fathers-day: 2.1 % inside vs 3.0 % outside at
    learning_rate 0.1, while seeds 2-4 show 8-19 % vs 4-7 %)."""
    seeds = (1, 2, 3, 4)
    records = run_grid(["vw"], ["seasonal-retail"], seeds, N, workers=2).records
    for cid in SEASONAL:
        share_in, share_out = [], []
        for seed in seeds:
            engine = records[records["seed"] == seed]
            world = World("seasonal-retail", seed, N)
            inside = np.array([world.in_window(cid, d) for d in engine["day"]])
            share_in.append((engine["collection"][inside] == cid).mean())
            share_out.append((engine["collection"][~inside] == cid).mean())
        assert np.mean(share_in) > np.mean(share_out), (cid, share_in, share_out)
    records = grid[0].records
    # The oracle, which knows the truth, shifts the same way.
    oracle = records[records["policy"] == "oracle"]
    inside = np.array([world.in_window("back-to-school", d) for d in oracle["day"]])
    assert (oracle["collection"][inside] == "back-to-school").mean() > \
        5 * (oracle["collection"][~inside] == "back-to-school").mean()


# --- the joined log ----------------------------------------------------------------

def test_joined_log_trains_plain_vw(grid):
    _, logs = grid
    path = logs / "joined.vw.seasonal-retail.s1.json"
    assert path.exists()
    done = subprocess.run([sys.executable, "-m", "vowpalwabbit", "--dsjson", "--ccb_explore_adf", "-d", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    match = re.search(r"number of examples = (\d+)", done.stdout + done.stderr)
    assert match and int(match.group(1)) == N
    events = list(read_joined([path]))
    assert len(events) == N
    records = grid[0].records
    engine = records[records["policy"] == "vw"]
    assert sum(sum(e.rewards) for e in events) == pytest.approx(engine["reward"].sum())


def test_deterministic_policies_log_readable_too(grid):
    _, logs = grid
    path = logs / "joined.rule.seasonal-retail.s1.json"
    done = subprocess.run([sys.executable, "-m", "vowpalwabbit", "--dsjson", "--ccb_explore_adf", "-d", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"number of examples = {N}" in done.stdout + done.stderr


# --- true value of target policies -----------------------------------------------------

def test_true_value_of_target_policies():
    world, requests = contexts("cold-start", 2, 150)
    uniform_rows = [[np.full(len(r.collections), 1 / len(r.collections)) for _ in r.slots] for r in requests]
    value = true_value(world, requests, uniform_rows)
    expected = np.mean([world.expected_matrix(r).mean(axis=1).sum() for r in requests])
    assert value["value"] == pytest.approx(expected)
    pairs = [[[(a, 1 / len(r.collections)) for a in range(len(r.collections))] for _ in r.slots] for r in requests]
    assert true_value(world, requests, pairs)["value"] == pytest.approx(expected)
    # The oracle's per-slot argmax is an upper bound for any per-slot target.
    behind = {id(r.inp): r for r in requests}  # a callable target sees only the DecisionInput
    greedy = true_value(world, requests, lambda inp: [
        [(int(np.argmax(world.expected_matrix(behind[id(inp)])[k])), 1.0)] for k in range(len(inp.slots))])
    assert greedy["value"] >= value["value"]
    assert set(value["per_slot"]) <= {"homepage", "detail", "email"}


# --- scenarios ----------------------------------------------------------------------

def test_builtin_scenarios_load_and_unknown_keys_are_errors(tmp_path):
    assert {"seasonal-retail", "cold-start", "trend-shock"} <= set(builtin_scenarios())
    for name in builtin_scenarios():
        assert load_scenario(name).name == name
    text = (Path(load_scenario.__code__.co_filename).parent / "scenarios" / "trend-shock.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('id = "beauty-edit"', 'id = "beauty-edit"\npopularity = 3'))
    with pytest.raises(ScenarioError, match=r"collections\[2\].*unknown key\(s\) popularity"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'.*seasonal-retail"):
        load_scenario("nope")
    with pytest.raises(ScenarioError, match="unknown key"):
        scenario_from_dict({"name": "x", "start": "2024-01-01", "days": 1, "slots": [], "segments": [],
                            "intents": [], "collections": [], "colour": "red"})
    good = tmp_path / "mine.toml"
    good.write_text(text)
    assert load_scenario(good).name == "trend-shock"


# --- report and command line ------------------------------------------------------------

def test_results_table_at_80_columns_keeps_every_name_and_number(grid):
    """Was: 'seaso…', 'expec…' -- rich truncated the cells to fit 80 columns."""
    result = grid[0]
    buffer = io.StringIO()
    print_results(result.summary, Console(file=buffer, width=80))
    out = buffer.getvalue()
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    columns, rows = results_cells(result.summary)
    assert "expected" in out and "regret vs oracle" in out
    for row in rows:
        for cell in row:
            assert cell in out, cell


def test_report_writes_html_and_plots(grid, tmp_path):
    result = grid[0]
    buffer = io.StringIO()
    print_results(result.summary, Console(file=buffer, width=200))
    assert "oracle" in buffer.getvalue() and "regret" in buffer.getvalue()
    index = write_report(tmp_path / "report", result, share_policies=["vw", "oracle"])
    page = index.read_text()
    for name in ("reward.png", "regret.png", "share-seasonal-retail-vw.png", "share-seasonal-retail-oracle.png"):
        assert (tmp_path / "report" / name).stat().st_size > 1000
        assert name in page


def test_cli_simulate(tmp_path):
    app = typer.Typer()
    app.command("simulate")(simulate)
    app.command("noop")(lambda: None)  # two commands, so 'simulate' is a subcommand as in 'placement'
    out = tmp_path / "results.csv"
    log = tmp_path / "joined.json"
    result = CliRunner().invoke(app, ["simulate", "--scenario", "cold-start", "--decisions", "120",
                                      "--policy", "uniform", "--policy", "vw:algorithm=epsilon", "--seeds", "0",
                                      "--workers", "1", "--out", str(out), "--log", str(log)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert set(table["policy"]) == {"uniform", "vw:algorithm=epsilon"}
    assert len(list(tmp_path.glob("joined.*.json"))) == 2
    help_text = CliRunner().invoke(app, ["simulate", "--help"], env={"COLUMNS": "200"}).output
    for option in ("--scenario", "--decisions", "--policy", "--seeds", "--workers", "--ray", "--ray-address",
                   "--report", "--out", "--log"):
        assert option in help_text
    bad = CliRunner().invoke(app, ["simulate", "--policy", "vw:algorithm=nope"])
    assert bad.exit_code != 0 and "is not one of" in bad.output


def test_process_pool_equals_in_process():
    args = (["vw", "greedy-ctr"], ["trend-shock"], [0, 1], 150)
    pool = run_grid(*args, workers=2)
    inline = run_grid(*args, workers=1)
    pd.testing.assert_frame_equal(comparable(pool.summary), comparable(inline.summary))


# --- true value of target policies on a run's logged events (--true-value) ---------------

def test_true_value_of_uniform_on_the_runs_events():
    n, seed = 300, 6
    result = run("seasonal-retail", "vw", seed=seed, decisions=n, true_value_of=["uniform", "oracle", "vw"])
    world, requests = contexts("seasonal-retail", seed, n)
    # Independently: each slot's mean expected reward over all its collections, summed over slots.
    q = [world.expected_matrix(r) for r in requests]
    marginal = np.mean([m.mean(axis=1).sum() for m in q])
    uniform = result.true_values["uniform"]
    assert uniform["n"] == n
    assert uniform["value_marginal"] == pytest.approx(marginal)
    # Replay's estimand: slot k uniform over what the *logged* earlier slots left.
    logged = result.records.groupby("decision")["collection"].apply(list)
    conditional = []
    for r, m in zip(requests, q):
        ids = [c.id for c in r.collections]
        taken = [ids.index(c) for c in logged[r.index]]
        conditional.append(sum(np.delete(m[k], taken[:k]).mean() for k in range(len(r.slots))))
    assert uniform["value"] == pytest.approx(np.mean(conditional))
    assert result.summary["true_value[uniform]"] == uniform["value"]
    # The oracle's marginal value is its own joint assignment: the run's oracle reward.
    assert result.true_values["oracle"]["value_marginal"] == pytest.approx(result.summary["oracle_reward"] / n)
    assert uniform["value"] < result.true_values["vw"]["value"] < result.true_values["oracle"]["value"]


def test_cli_true_value_is_printed_and_saved(tmp_path):
    app = typer.Typer()
    app.command("simulate")(simulate)
    app.command("noop")(lambda: None)
    out = tmp_path / "results.csv"
    result = CliRunner().invoke(app, ["simulate", "-s", "cold-start", "-n", "150", "-p", "rule", "--seeds", "2",
                                      "--workers", "1", "--true-value", "uniform", "--true-value", "oracle",
                                      "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "True value" in result.output
    table = pd.read_csv(out)
    api = run("cold-start", "rule", seed=2, decisions=150, true_value_of=["uniform", "oracle"]).true_values
    assert table["true_value[uniform]"].iloc[0] == pytest.approx(api["uniform"]["value"])
    assert table["true_value[oracle]"].iloc[0] == pytest.approx(api["oracle"]["value"])


def test_one_spec_syntax_and_the_old_spelling_still_works_with_a_warning():
    """simulate and replay name the engine the same way; 'engine:<explorer>'
    is the deprecated spelling of 'vw:algorithm=<explorer>'."""
    from simulator.replay.targets import parse_policy as replay_policy
    from simulator.specs import parse_policy

    with pytest.warns(FutureWarning, match="old spelling of 'vw:algorithm=epsilon'"):
        old = parse_policy("engine:epsilon")
    new = parse_policy("vw:algorithm=epsilon")
    assert old.settings == new.settings and old.settings.exploration.algorithm == "epsilon"
    assert replay_policy("vw:algorithm=epsilon").settings == new.settings
    with pytest.warns(FutureWarning):
        assert replay_policy("engine").settings == parse_policy("vw").settings
