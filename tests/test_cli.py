"""The command line as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from placement_cli import app
from server.config import ConfigError, load_config

import pytest

runner = CliRunner()
PLACEMENT = str(Path(sys.executable).with_name("placement"))


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "demo"):
        assert command in result.output
    serve_help = runner.invoke(app, ["serve", "--help"]).output
    for option in ("--config", "--host", "--port", "--data-dir"):
        assert option in serve_help


def test_demo_learns(tmp_path):
    result = runner.invoke(app, ["demo", "--decisions", "2000", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    match = re.search(r"learned policy: ([0-9.]+) clicks per slot; uniform random: ([0-9.]+)", result.output)
    assert match, result.output
    learned, uniform = map(float, match.groups())
    assert learned > 1.8 * uniform
    assert (tmp_path / "joined" / "default").exists()


def _demo_table(seed: int) -> str:
    """What ``placement demo`` prints for a seed, its seconds taken out."""
    out = subprocess.run([PLACEMENT, "demo", "--decisions", "1000", "--seed", str(seed)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "COLUMNS": "100"}, check=True).stdout
    table = " ".join(out[out.index("What the engine learned"):].split())  # wrapping moves with the seconds
    return re.sub(r", \d+s\.", ", Ns.", table)


def test_demo_prints_the_same_table_for_the_same_seed():
    """The README's first command is reproducible: two runs of one seed through
    real servers (their gRPC timing differs) print the same table and summary,
    all but the seconds; another seed prints another."""
    first = _demo_table(3)
    assert "students" in first and re.search(r"\(\d+\.\dx\)", first), first
    assert _demo_table(3) == first
    assert _demo_table(4) != first


def test_serve_runs_and_stops_cleanly(tmp_path):
    proc = subprocess.Popen([PLACEMENT, "serve", "--port", "0", "--data-dir", str(tmp_path / "d"),
                             "--log-format", "json", "--workers", "1"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        port, logged = None, []
        for line in proc.stderr:
            match = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
            logged.append(json.loads(line))  # structured logs: every line is a JSON object
        assert port, "server did not report its port"
        assert any("listening" in entry["message"] for entry in logged), logged
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "d" / "models" / "default" / "CURRENT").exists()


def test_bad_config_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[join]\nwindow_secnds = 3\n')
    result = runner.invoke(app, ["serve", "--config", str(bad)])
    assert result.exit_code == 2
    assert "window_secnds" in result.output
    missing = runner.invoke(app, ["serve", "--config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("""
port = 6000
[join]
window_seconds = 60
aggregation = "max"
[surfaces.email]
mode = "apprentice"
[surfaces.email.learning.exploration]
algorithm = "epsilon"
epsilon = 0.2
""")
    cfg = load_config(path, port=7000)
    assert cfg.port == 7000 and cfg.join.window_seconds == 60 and cfg.join.aggregation == "max"
    assert cfg.surfaces["email"].mode == "apprentice"
    assert cfg.surfaces["email"].learning.exploration.epsilon == 0.2
    assert "default" in cfg.surfaces
    for text, message in (('[log]\nfsync = "sometimes"\n', "fsync"),
                          ('[surfaces.default]\nmode = "yolo"\n', "mode"),
                          ('[surfaces.default.learning.exploration]\nalgorithm = "magic"\n', "magic"),
                          ('port = 70000\n', "port"),
                          ('[limits]\nforward_timeout_seconds = 0\n', "limits.forward_timeout_seconds")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_a_deprecated_policy_spelling_is_a_sentence_not_a_source_location():
    placement = str(Path(sys.executable).with_name("placement"))
    done = subprocess.run([placement, "simulate", "--policy", "engine:epsilon", "--decisions", "40", "--seeds", "0",
                           "--workers", "1", "--scenario", "cold-start"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warning: policy 'engine:epsilon' is the old spelling of 'vw:algorithm=epsilon'" in done.stderr
    assert "specs.py" not in done.stderr and "FutureWarning" not in done.stderr
