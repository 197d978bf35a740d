"""The simulator driving a real server over gRPC, against the in-process loop.

The server joins on its wall clock; the simulation is paced so that one
simulated reward window takes PACE wall seconds, and the server's join window
is a little longer, so the server learns each decision about as many
decisions later as the in-process joiner does. The scenario's reward window
is widened to 8 days so a window spans 60 decisions at N = 1200: at PACE that
is 120 decisions a second, which the gRPC path sustains on two cores.

How much later the server learns depends on the machine (between one window
and JOIN_SECONDS / PACE of them, plus a publish), and at N = 1200 the reward
moves with that lag about as much as with the seed (in-process, seed 0 at 1,
1.5 and 1.67 windows: 0.196, 0.183, 0.187). So the in-process side runs every
seed at LAGS (1 to JOIN_SECONDS / PACE windows), and the agreement is judged
with Welch's test against both spreads: a test built on one lag failed on a busy machine with the gRPC path
learning correctly, 1.5 windows late.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import typer
from scipy import stats
from typer.testing import CliRunner

from certs import make_pki
from server.client import PlacementClient, tls_credentials
from simulator.commands.simulate import simulate
from simulator.experiments import Job, run_job
from simulator.specs import parse_policy
from simulator.remote import RemoteOptions
from simulator.runner import run
from simulator.world import load_scenario

N = 1200
SEEDS = (0, 1, 2)
PACE = 0.5  # wall seconds per simulated reward window
JOIN_SECONDS = 0.75  # the server's join window: a little longer than PACE, for late deliveries
SERVER = {"join": {"window_seconds": JOIN_SECONDS, "tick_seconds": 0.02},
          "learner": {"publish_every_examples": 10, "publish_every_seconds": 0.05}}


WINDOW_HOURS = 192.0
LAGS = (1.0, 1.25, JOIN_SECONDS / PACE)  # in-process join lags, in reward windows


def _scenario(lag: float = 1.0):
    """seasonal-retail with an 8-day reward window; ``lag`` > 1 joins (and
    learns) that many windows after each decision (in-process only)."""
    base = load_scenario("seasonal-retail")
    return replace(base, reward=replace(base.reward, window_hours=WINDOW_HOURS * lag))


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("simulate")(simulate)
    app.command("noop")(lambda: None)  # two commands, so 'simulate' is a subcommand as in 'placement'
    return app


def _text(output: str) -> str:
    """CLI output without rich's box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def test_grpc_path_agrees_with_in_process(start, tmp_path):
    scenario = _scenario()
    jobs = [Job(parse_policy("vw"), _scenario(lag), seed, N, None, (parse_policy("uniform"),))
            for lag in LAGS for seed in SEEDS]
    with ProcessPoolExecutor(max_workers=1) as pool:  # the in-process runs use the other core meanwhile
        pending = [pool.submit(run_job, job) for job in jobs]
        remote = []
        for seed in SEEDS:
            server = start(tmp_path / f"seed{seed}", **SERVER)
            result = run(scenario, "vw", seed, N, target=RemoteOptions(server.target, pace=PACE))
            assert server.engine.counts["decisions"] == N
            assert server.engine.counts["rewards"] == result.summary["server_rewards"] > 0
            server.stop(grace=0.5)
            remote.append(result.summary)
        local = {(job.scenario.reward.window_hours, job.seed): f.result()[0] for job, f in zip(jobs, pending)}

    for s in remote:  # the pace held: rewards reached the server inside its window
        assert s["model_versions_seen"] >= 10
        assert s["server_expired_rewards"] <= 0.02 * s["server_rewards"], s
        assert s["expired_rewards"] <= 0.02 * s["server_rewards"], s
    grpc_mean = np.array([s["expected_reward"] / N for s in remote])
    local_mean = np.array([s["expected_reward"] / N for s in local.values()])
    # Welch's two-sample test at 1 %: gRPC seeds against in-process (lag, seed) runs.
    welch = stats.ttest_ind(grpc_mean, local_mean, equal_var=False)
    assert welch.pvalue >= 0.01, (grpc_mean, local_mean, welch)
    # The server learned: on every seed it beats uniform on the same contexts.
    uniform = np.array([local[(WINDOW_HOURS, seed)]["true_value[uniform]"] for seed in SEEDS])
    assert (grpc_mean > uniform).all(), (grpc_mean, uniform)


def test_cli_target_registers_collections_and_logs(start, tmp_path):
    server = start(tmp_path / "data")
    log = tmp_path / "joined.json"
    out = tmp_path / "results.csv"
    result = CliRunner().invoke(_app(), ["simulate", "--target", server.target, "--decisions", "200", "--seeds", "4",
                                         "--log", str(log), "--out", str(out), "--true-value", "uniform"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "True value" in result.output and "rewards accepted" in result.output
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 200 and all(line["_model"] for line in lines)
    with PlacementClient(server.target) as client:
        catalog = {c.id: c for c in client.list_collections()}
    assert set(catalog) == {c.id for c in load_scenario("seasonal-retail").collections}
    assert catalog["summer-essentials"].HasField("active_from")  # added mid-run
    assert catalog["spring-cleaning"].HasField("active_until")  # retired mid-run
    # Same seed again: the server refuses reused event ids, and the error says what to do.
    again = CliRunner().invoke(_app(), ["simulate", "--target", server.target, "-n", "50", "--seeds", "4"],
                               env={"COLUMNS": "200"})
    assert again.exit_code != 0 and "--run-id" in _text(again.output)
    fresh = CliRunner().invoke(_app(), ["simulate", "--target", server.target, "-n", "50", "--seeds", "4",
                                        "--run-id", "second"], env={"COLUMNS": "200"})
    assert fresh.exit_code == 0, fresh.output


def test_cli_target_only_with_engine():
    for policy in ("uniform", "vw:algorithm=epsilon", "oracle"):
        result = CliRunner().invoke(_app(), ["simulate", "--target", "127.0.0.1:1", "--policy", policy],
                                    env={"COLUMNS": "200"})
        assert result.exit_code != 0
        assert "cannot run against a server" in _text(result.output) and "--policy vw" in _text(result.output)
    result = CliRunner().invoke(_app(), ["simulate", "--pace", "1", "-n", "10"], env={"COLUMNS": "200"})
    assert result.exit_code != 0 and "only with --target" in _text(result.output)


def test_cli_target_with_admin_token(start, tmp_path, monkeypatch):
    monkeypatch.delenv("PLACEMENT_ADMIN_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    server = start(tmp_path / "data", security={"admin_token_file": str(token_file)})
    args = ["simulate", "--target", server.target, "-n", "30", "--seeds", "0"]
    refused = CliRunner().invoke(_app(), args, env={"COLUMNS": "200"})
    assert refused.exit_code != 0 and "--token" in _text(refused.output)
    accepted = CliRunner().invoke(_app(), [*args, "--token", "s3cret-token"], env={"COLUMNS": "200"})
    assert accepted.exit_code == 0, accepted.output


def test_cli_target_over_mutual_tls(start, tmp_path):
    pki = make_pki(tmp_path)
    server = start(tmp_path / "data", security={
        "tls_cert_file": str(pki["server"].cert), "tls_key_file": str(pki["server"].key),
        "tls_client_ca_file": str(pki["ca"].cert), "admin_identities": ["ops-admin"]})
    args = ["simulate", "--target", server.target, "-n", "30", "--seeds", "0"]
    # Plaintext to a TLS server, and a certificate without its key, fail with a message.
    plaintext = CliRunner().invoke(_app(), args, env={"COLUMNS": "200"})
    assert plaintext.exit_code != 0
    unpaired = CliRunner().invoke(_app(), [*args, "--ca-cert", str(pki["ca"].cert), "--client-cert",
                                           str(pki["admin"].cert)], env={"COLUMNS": "200"})
    assert unpaired.exit_code != 0 and "needs its key" in _text(unpaired.output)
    tls = CliRunner().invoke(_app(), [*args, "--ca-cert", str(pki["ca"].cert), "--client-cert", str(pki["admin"].cert),
                                      "--client-key", str(pki["admin"].key)], env={"COLUMNS": "200"})
    assert tls.exit_code == 0, tls.output
    with PlacementClient(server.target, credentials=tls_credentials(pki["ca"].cert, pki["admin"].cert,
                                                                     pki["admin"].key)) as admin:
        assert admin.stats().decisions == 30


def test_tls_options_only_with_target(tmp_path):
    result = CliRunner().invoke(_app(), ["simulate", "-n", "10", "--ca-cert", str(tmp_path / "ca.pem")],
                                env={"COLUMNS": "200"})
    assert result.exit_code != 0 and "only with --target" in _text(result.output)
