"""Round trip: decisions served by a real server over gRPC, joined by the
engine, replayed offline by the ``placement replay`` command."""

from __future__ import annotations

import json
import random

import typer
from typer.testing import CliRunner

from bandit.logformat.events import read_joined
from server.client import PlacementClient, collection
from simulator.commands.replay import replay

from helpers import COLLECTIONS, SEGMENTS, SLOTS, click_probability


def test_server_log_replays_to_json_and_report(start, tmp_path):
    data = tmp_path / "data"
    server = start(data)
    rng = random.Random(4)
    with PlacementClient(server.target) as client:
        client.put_collections([collection(cid, {"collection": {"rank": float(i)}})
                                for i, cid in enumerate(COLLECTIONS)])
        for _ in range(300):
            seg = rng.choice(SEGMENTS)
            result = client.decide({"customer": {"segment": seg}}, SLOTS)
            for slot_id, cid in result.chosen().items():
                if rng.random() < click_probability(seg, slot_id, cid):
                    client.reward(result.event_id, 1.0, slot_id=slot_id)
    server.engine.settle(ahead=3600)
    joined_dir = data / "joined" / "default"
    events = list(read_joined(sorted(joined_dir.glob("*.dsjson"))))
    assert len(events) == 300

    app = typer.Typer()
    app.command()(replay)
    app.command()(lambda: None)
    out, report_dir = tmp_path / "results.json", tmp_path / "report"
    res = CliRunner().invoke(app, [
        "replay", str(joined_dir), "-p", "uniform", "-p", "logged", "-p", "baseline",
        "-p", "vw:algorithm=epsilon,epsilon=0.1", "-p", f"model:{data}", "--workers", "1",
        "--bootstrap-resamples", "200", "--seed", "5", "--json-out", str(out), "--report", str(report_dir),
    ])
    assert res.exit_code == 0, res.output
    results = json.loads(out.read_text())
    assert results["log"]["events"] == 300 and results["log"]["slots"] == list(SLOTS)
    names = [p["name"] for p in results["policies"]]
    assert names[:3] == ["uniform", "logged", "baseline"] and names[4].startswith("model:default:v")
    logged = next(p for p in results["policies"] if p["name"] == "logged")
    ips = next(e for e in logged["estimates"] if e["estimator"] == "ips" and e["scope"] == "page")
    assert abs(ips["value"] - sum(sum(e.rewards) for e in events) / 300) < 1e-9
    for policy in results["policies"]:
        for entry in policy["estimates"]:
            assert ("value" in entry) != ("refused" in entry), entry
    for name in ("index.html", "estimates.png", "weights.png"):
        assert (report_dir / name).stat().st_size > 500
    assert "Offline evaluation" in (report_dir / "index.html").read_text()
    assert "logged" in res.output and "ESS" in res.output
