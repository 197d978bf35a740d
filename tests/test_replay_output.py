"""`placement replay` where scientists read it (issue 13 point 6): at 80
columns through a pipe every policy name and every number printed is there
in full; --format json/csv/markdown; the HTML report opens with the summary
and its plots exist."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from simulator.commands.replay import replay
from simulator.replay.output import fmt, interval_text

from placement_process import PLACEMENT
from replay_world import make_events, write_log

LONG = "vw:algorithm=epsilon,epsilon=0.1,learning_rate=0.3,interactions=CA+SA"
POLICIES = ["uniform", "logged", "baseline", LONG]


@pytest.fixture(scope="module")
def log_path(tmp_path_factory) -> Path:
    return write_log(tmp_path_factory.mktemp("out") / "log.dsjson", make_events(600, seed=5))


@pytest.fixture(scope="module")
def narrow(log_path: Path) -> tuple[str, dict]:
    """The table at COLUMNS=80 through a pipe, and the same run's JSON."""
    json_path = log_path.with_name("results.json")
    args = [PLACEMENT, "replay", str(log_path), *[a for p in POLICIES for a in ("-p", p)], "--workers", "1",
            "--slots", "-j", str(json_path)]
    env = {**os.environ, "COLUMNS": "80"}
    env.pop("FORCE_COLOR", None)
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(json_path.read_text())


def test_the_table_at_80_columns_keeps_every_name_and_number(narrow) -> None:
    out, results = narrow
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    for name in POLICIES:
        assert name in out, name  # in the table or, abbreviated there, in its legend
    for policy in results["policies"]:
        for e in policy["estimates"]:
            if "value" in e:
                assert fmt(e["value"]) in out, (policy["name"], e["estimator"], e["scope"])
                for method in e["intervals"]:
                    assert interval_text(e, method) in out
            else:
                assert f"refused: {e['refused']}" in out


def test_the_summary_and_warnings_come_with_the_table(narrow) -> None:
    out, results = narrow
    summary = results["summary"]
    assert summary["best"] in [p["name"] for p in results["policies"]]
    assert "Estimated best:" in out and "Next:" in out
    for policy in results["policies"]:
        assert "warnings" in policy
        for w in policy["warnings"]:
            assert w["kind"] and w["message"]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(replay)
    app.command()(lambda: None)
    return app


def _run(log_path: Path, *extra: str) -> str:
    res = CliRunner().invoke(_app(), ["replay", str(log_path), "-p", "uniform", "-p", "logged", "-e", "dm,ips,dr",
                                      "--slate", "none", "--interval", "normal", "-q", *extra])
    assert res.exit_code == 0, res.output
    return res.stdout


def test_format_json_csv_markdown(log_path: Path) -> None:
    data = json.loads(_run(log_path, "--format", "json"))
    assert {p["name"] for p in data["policies"]} == {"uniform", "logged"}
    rows = list(csv.DictReader(io.StringIO(_run(log_path, "--format", "csv"))))
    n_estimates = sum(len(p["estimates"]) for p in data["policies"])
    assert len(rows) == n_estimates
    dr = next(r for r in rows if r["policy"] == "uniform" and r["estimator"] == "dr" and r["scope"] == "page")
    want = next(e for e in data["policies"][0]["estimates"] if e["estimator"] == "dr" and e["scope"] == "page")
    assert float(dr["value"]) == want["value"] and float(dr["normal_lower"]) == want["intervals"]["normal"]["lower"]
    md = _run(log_path, "--format", "markdown")
    assert md.startswith("# Offline evaluation") and "Estimated best:" in md
    assert re.search(r"^\| policy \| estimator \| scope \| estimate \| normal \| ESS \|$", md, re.M)
    res = CliRunner().invoke(_app(), ["replay", str(log_path), "--format", "yaml"])
    assert res.exit_code == 2 and "--format 'yaml'" in res.output


def test_the_report_opens_with_the_summary_and_has_its_plots(narrow, tmp_path: Path) -> None:
    from simulator.replay.report import report

    _, results = narrow
    page = report(results, tmp_path / "report").read_text()
    summary_at, estimates_at = page.index("<h2>Summary</h2>"), page.index("<h2>Estimates</h2>")
    assert summary_at < estimates_at
    for sentence in results["summary"]["sentences"]:
        assert sentence.replace("'", "&#x27;") in page
    assert "What to do next:" in page
    warnings = [w for p in results["policies"] for w in p["warnings"]]
    assert ("Warnings (" in page) == bool(warnings)
    for name in ("estimates.png", "weights.png"):
        assert (tmp_path / "report" / name).stat().st_size > 5000 and f"src='{name}'" in page
    assert "<td>P1</td><td>" + LONG + "</td>" in page  # the plots' short label, explained


def test_plot_axes_stay_in_the_rewards_range() -> None:
    from simulator.replay.plots import short_labels, value_limits

    results = {"log": {"reward_range": [0.0, 1.0], "slots": ["0", "1", "2"]}, "config": {"reward_max": None},
               "policies": [{"name": LONG}, {"name": "uniform"}]}
    lo, hi = value_limits(results, "page", [-0.002, 0.003], [0.004, 0.009])
    assert lo == 0.0 and 0.009 < hi < 0.01  # a click rate: no negative axis
    assert value_limits(results, "slot:0", [0.9], [1.3])[1] == 1.0
    assert short_labels(results) == {LONG: "P1", "uniform": "uniform"}
