"""Server behaviour over real channels: restart, hot swap, admin, health, reflection."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.client import PlacementClient, collection

from helpers import SEGMENTS, SLOTS, drive, register_collections, settle


def test_restart_keeps_model_version_and_pending_joins(start, tmp_path):
    data = tmp_path / "restart"
    first = start(data, join={"window_seconds": 3600, "tick_seconds": 0.02})
    with PlacementClient(first.target) as client:
        register_collections(client)
        drive(client, 200, seed=3)
        first.engine.join_now(now=first.engine.clock() + 7200)  # these 200 are joined and learned
        first.engine.wait_learned()
        pending = client.decide({"customer": {"segment": "a"}}, SLOTS, event_id="pending-1")
        version_before = client.model_info().current_version
        joined_before = client.stats().joined
    first.stop()  # publishes what was learned
    second = start(data, join={"window_seconds": 3600, "tick_seconds": 0.02})
    with PlacementClient(second.target) as client:
        info = client.model_info()
        assert int(info.current_version) >= int(version_before)
        assert info.versions[-1].examples_learned == joined_before == 200
        assert client.stats().pending == 1
        # The pending decision still takes its reward and is joined once.
        client.reward("pending-1", 1.0, slot_id="email")
        again = client.decide({"customer": {"segment": "a"}}, SLOTS, event_id="pending-1")
        assert again.chosen() == pending.chosen()
        second.engine.join_now(now=second.engine.clock() + 7200)
        second.engine.wait_learned()
        stats = client.stats()
        assert stats.joined == 1 and stats.joined_with_reward == 1
        assert second.engine.surfaces["default"].examples_learned == 201


def test_hot_swap_under_concurrent_decides(start):
    server = start(learner={"publish_every_examples": 25, "publish_every_seconds": 0.1})
    failures: list[Exception] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer(seed: int) -> None:
        with PlacementClient(server.target) as client:
            i = 0
            while not stop.is_set():
                try:
                    result = client.decide({"customer": {"segment": SEGMENTS[i % 3]}}, SLOTS)
                    versions.add(result.model_version)
                    client.reward(result.event_id, 1.0, slot_id=SLOTS[i % 3])
                except Exception as exc:  # any failed call fails the test
                    failures.append(exc)
                i += 1

    with PlacementClient(server.target) as admin:
        register_collections(admin)
        threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        waited = threading.Event()
        for _ in range(150):  # at most ~30 s; joins close on their own (the tests' window)
            if len(versions) >= 5 or waited.wait(0.2):
                break
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    assert len(versions) >= 5, versions


def test_export_import_and_rollback(server, client, tmp_path):
    register_collections(client)
    drive(client, 300, seed=4)
    settle(server)
    info = client.model_info()
    current = int(info.current_version)
    header = client.export_model(tmp_path / "model.vw")
    assert header.version == current and len(header.sha256) == 64
    rolled = client.rollback(1)
    # A new version (the learner may publish in between on the default topology, so not always current + 1).
    assert int(rolled.current_version) > current
    assert rolled.versions[-1].version == int(rolled.current_version)
    assert rolled.versions[-1].origin == "rollback"
    assert rolled.versions[-1].examples_learned == 0
    imported = client.import_model(tmp_path / "model.vw")
    assert imported.versions[-1].origin == "imported"
    assert imported.versions[-1].sha256 == header.sha256
    decision = client.decide({"customer": {"segment": "a"}}, SLOTS)
    assert decision.model_version == imported.current_version


def test_import_refuses_bad_checksum_and_non_models(client, tmp_path):
    path = tmp_path / "model.vw"
    client.export_model(path)
    with pytest.raises(grpc.RpcError) as err:
        client.import_model(path, sha256="0" * 64)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "checksum" in err.value.details()
    junk = tmp_path / "junk.vw"
    junk.write_bytes(b"\x80\x04not a model at all")
    with pytest.raises(grpc.RpcError) as err:
        client.import_model(junk)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a Vowpal Wabbit model" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.rollback(999)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_collections_admin(client):
    register_collections(client)
    assert [c.id for c in client.list_collections()] == [f"col-{i}" for i in range(5)]
    version = client.delete_collection("col-0")
    assert [c.id for c in client.list_collections()] == [f"col-{i}" for i in range(1, 5)]
    assert version == client.stats().catalog_version
    with pytest.raises(grpc.RpcError) as err:
        client.delete_collection("col-0")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection(server):
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "placement.v1.PlacementService", "placement.v1.PlacementAdmin"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=5)
        names = {s.name for reply in replies for s in reply.list_services_response.service}
        assert {"placement.v1.PlacementService", "placement.v1.PlacementAdmin", "grpc.health.v1.Health"} <= names


def test_corrupt_joined_record_is_counted_and_serving_continues(start, tmp_path):
    data = tmp_path / "corrupt"
    first = start(data)
    with PlacementClient(first.target) as client:
        register_collections(client)
        drive(client, 50, seed=6)
        first.engine.join_now(now=first.engine.clock() + 3600)
        first.engine.wait_learned()
    first.stop()
    models = data / "models" / "default"
    for meta in models.glob("v*.json"):  # as if no learned version had been published
        if meta.name != "v000001.json":
            meta.unlink()
    (models / "CURRENT").write_text("1")
    joined = sorted((data / "joined" / "default").glob("*.dsjson"))[0]
    lines = joined.read_text().splitlines()
    lines[10] = '{"c": {"_multi": "not a list"}, "_outcomes": 3}'  # parses as JSON, not as an event
    joined.write_text("\n".join(lines) + "\n")
    second = start(data)
    with PlacementClient(second.target) as client:
        stats = client.stats()
        assert stats.learner_errors == 1
        assert second.engine.surfaces["default"].examples_learned == 49
        assert client.decide({"customer": {"segment": "a"}}, SLOTS).slots  # still serving


def test_admin_calls_without_a_deadline(server, client, tmp_path):
    """No deadline is the default call option of grpcio, grpc-go, grpc-java and
    grpc-js: every admin call answers as it does with one."""
    with PlacementClient(server.target, timeout=None) as patient:
        assert patient.put_collections([collection("c0", {"c": {"x": 1.0}})]) == 1
        assert [c.id for c in patient.list_collections()] == ["c0"]
        assert patient.stats().catalog_version == 1
        header = patient.export_model(tmp_path / "model.vw")
        assert int(patient.model_info().current_version) == header.version
        assert patient.import_model(tmp_path / "model.vw").versions[-1].origin == "imported"
        assert patient.delete_collection("c0") == 2
        with pytest.raises(grpc.RpcError) as err:
            patient.delete_collection("c0")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "collection 'c0' is not in the catalog"
        with pytest.raises(grpc.RpcError) as err:
            patient.export_model(tmp_path / "other.vw", surface="kiosk")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "unknown surface 'kiosk'"


def test_acknowledged_catalog_change_is_what_the_next_decide_sees(server):
    """Read-your-writes on every serving process: each round puts a collection
    only its own slot may take, then decides on a fresh connection (the kernel
    spreads connections over workers); then deletes it and decides again."""
    with PlacementClient(server.target) as admin:
        for i in range(12):
            admin.put_collections([collection(f"only-{i}", {"c": {"x": float(i)}}, eligible_slots=[f"slot{i}"])])
            with PlacementClient(server.target) as fresh:
                assert fresh.decide({}, [f"slot{i}"]).chosen() == {f"slot{i}": f"only-{i}"}
            admin.delete_collection(f"only-{i}")
            with PlacementClient(server.target) as fresh:
                with pytest.raises(grpc.RpcError) as err:
                    fresh.decide({}, [f"slot{i}"])
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert err.value.details() == f"slot 'slot{i}' has no eligible collection left"
                with pytest.raises(grpc.RpcError) as err:  # by id: looked up in the catalog
                    fresh.decide({}, [f"slot{i}"], [f"only-{i}"])
                assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_metrics_and_get_stats_are_one_snapshot_on_every_topology(start_topology):
    """The Prometheus endpoint and GetStats count the same things the same way,
    every serving process included (the default topology served no metrics)."""
    import re
    import urllib.request

    server = start_topology(metrics={"port": 0})
    assert server.metrics_port, "--metrics-port is served on every topology"
    with PlacementClient(server.target) as client:
        register_collections(client)
        drive(client, 20, seed=5)
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as refused:
                client.decide({"customer": {"segment": "a"}}, [])
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        settle(server)  # every join closed: no window closes between the two reads
        stats = client.stats()
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    scraped = {m.group(1): float(m.group(2)) for m in re.finditer(r"^placement_(\w+)_total (\S+)$", body, re.M)}
    assert stats.decisions == 20 and stats.bad_requests == 3 and stats.joined == 20
    for name in ("decisions", "rewards", "bad_requests", "joined"):
        assert scraped[name] == getattr(stats, name), name


def test_model_info_is_one_snapshot_while_versions_are_published(server, client):
    """GetModelInfo while the learner publishes: the version it calls current
    is the newest it lists (publishing writes the version, then the serving
    side loads it; a read between the two said current = newest - 1, seen
    right after restarts in test_crash), and a version pruned meanwhile is no
    INTERNAL error. 40 publishes, each after a read, reads going on throughout."""
    surface = server.engine.surfaces["default"]
    done, read = threading.Event(), threading.Event()
    seen: list[tuple[int, int]] = []

    def publish() -> None:
        try:
            for _ in range(40):
                read.wait(30)
                read.clear()
                surface.publish()
        finally:
            done.set()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    while not done.is_set():
        info = client.model_info()
        seen.append((int(info.current_version), max(v.version for v in info.versions)))
        read.set()
    publisher.join()
    assert len(seen) >= 40
    assert [s for s in seen if s[0] != s[1]] == []
