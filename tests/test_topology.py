"""Past one machine: a coordinator and serving workers as separate hosts would
run them (separate processes, their own ports, a shared data directory, the
coordinator reached over TCP with the admin token)."""

from __future__ import annotations

import time

import grpc
import pytest

from server.client import PlacementClient, collection, tls_credentials

from certs import make_pki
from placement_process import launch, stop

CONFIG = """
[join]
window_seconds = 1.0
tick_seconds = 0.05
[learner]
publish_every_examples = 50
publish_every_seconds = 0.3
"""
TOKEN = "topology-test-token"


def _launch(args: list[str], pattern: str):
    return launch(args, pattern, env={"PLACEMENT_ADMIN_TOKEN": TOKEN})


def _start_coordinator(common: list[str], procs: list) -> str:
    """The learner alone (no local workers), listening for remote ones; its address."""
    coordinator, match = _launch(["serve", "--workers", "0", "--coordinator-listen", "127.0.0.1:0", *common],
                                 r"coordinator for remote workers on port (\d+)")
    procs.append(coordinator)
    return f"127.0.0.1:{match.group(1)}"


def test_remote_workers_share_storage_and_one_learner(tmp_path):
    data, config = tmp_path / "shared", tmp_path / "c.toml"
    config.write_text(CONFIG)
    common = ["--data-dir", str(data), "--config", str(config)]
    procs = []
    try:
        internal = _start_coordinator(common, procs)
        targets = {}
        for name in ("host-a", "host-b"):
            proc, m = _launch(["worker", "--coordinator", internal, "--name", name, "--port", "0", *common],
                              rf"worker {name} serving on 127\.0\.0\.1:(\d+)")
            procs.append(proc)
            targets[name] = f"127.0.0.1:{m.group(1)}"
        with PlacementClient(targets["host-a"], token=TOKEN) as admin:
            admin.put_collections([collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(4)])
        with PlacementClient(targets["host-a"]) as anonymous:
            with pytest.raises(grpc.RpcError) as err:
                anonymous.stats()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with PlacementClient(internal) as outsider:  # the coordinator's port wants the token too
            with pytest.raises(grpc.RpcError) as err:
                outsider.reward("x", 1.0)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        versions: dict[int, set[str]] = {0: set(), 1: set()}
        n, deadline = 0, time.monotonic() + 30
        with PlacementClient(targets["host-a"]) as a, PlacementClient(targets["host-b"]) as b:
            # Until both hosts have served a newer model than the first (bounded in time).
            while n < 300 or min(len(v) for v in versions.values()) < 2:
                assert time.monotonic() < deadline, versions
                decider, rewarder = (a, b) if n % 2 else (b, a)
                result = decider.decide({"u": {"seg": "abc"[n % 3]}}, ["homepage", "email"])
                versions[n % 2].add(result.model_version)
                assert rewarder.reward(result.event_id, 1.0, slot_id="email") == "email"  # the other host
                n += 1
        time.sleep(2.0)
        with PlacementClient(targets["host-b"], token=TOKEN) as admin:
            stats = admin.stats()
            assert stats.decisions == n and stats.rewards == n
            assert stats.joined == n and stats.joined_with_reward == n and stats.pending == 0
        assert sorted(p.name for p in (data / "events").glob("worker-*")) == ["worker-host-a", "worker-host-b"]
    finally:  # workers first, then the coordinator
        assert [stop(proc) for proc in reversed(procs)] == [0] * len(procs)


def test_remote_worker_reaches_the_coordinator_over_mutual_tls(tmp_path):
    """With TLS configured, a remote worker's link to the coordinator is mutual
    TLS (the worker presents its certificate, trusts the configured CA); a
    plaintext client is turned away, and decisions, rewards and joins work."""
    pki = make_pki(tmp_path)
    data, config = tmp_path / "shared", tmp_path / "c.toml"
    config.write_text(CONFIG + f"""
[security]
tls_cert_file = "{pki['server'].cert}"
tls_key_file = "{pki['server'].key}"
tls_client_ca_file = "{pki['ca'].cert}"
""")
    common = ["--data-dir", str(data), "--config", str(config)]
    creds = tls_credentials(pki["ca"].cert, pki["frontend"].cert, pki["frontend"].key)
    procs = []
    try:
        internal = _start_coordinator(common, procs)
        with PlacementClient(internal, timeout=2, token=TOKEN) as plaintext:
            with pytest.raises(grpc.RpcError) as err:
                plaintext.stats()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        worker, m = _launch(["worker", "--coordinator", internal, "--name", "host-a", "--port", "0", *common],
                            r"worker host-a serving on 127\.0\.0\.1:(\d+)")
        procs.append(worker)
        target = f"127.0.0.1:{m.group(1)}"
        with PlacementClient(target, token=TOKEN, credentials=creds) as client:
            client.put_collections([collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(3)])  # via the coordinator
            events = [client.decide({"u": {"seg": "ab"[i % 2]}}, ["homepage"]).event_id for i in range(20)]
            assert all(client.reward(e, 1.0) == "homepage" for e in events)  # forwarded to the coordinator
            deadline = time.monotonic() + 15
            while (stats := client.stats()).joined < 20:
                assert time.monotonic() < deadline, stats
            assert stats.decisions == 20 and stats.joined_with_reward == 20
    finally:
        assert [stop(proc) for proc in reversed(procs)] == [0] * len(procs)
