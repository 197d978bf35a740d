"""Hostile input and bad models never poison the engine or lose what it
acknowledged (issue 12), each against a real server: rewards beyond the
documented range, reward/activation times before their decision or far in the
future, bad items inside a join batch (also from an old log, after a
restart), model imports with other options, file-writing header options or
cut short (a subprocess server, restarted), blank admin tokens, the data
directory's modes, and a worker's failing refresh."""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from conftest import make_config
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import SEGMENTS, SLOTS, drive, register_collections, settle
from placement_process import PLACEMENT, launch, stop
from vowpalwabbit import pyvw

from bandit.logformat.events import read_lines
from bandit.vwargs import Exploration, LearningSettings, vw_arguments
from server.client import PlacementClient
from server.workers import WorkerEngine

CODE = grpc.StatusCode
LONG = {"join": {"window_seconds": 3600, "tick_seconds": 0.02}}  # joins only when a test closes them
YEAR_9999 = datetime(9999, 1, 1, tzinfo=UTC).timestamp()


def joined_lines(data: Path) -> dict[str, dict]:
    return {obj["EventId"]: obj for path in sorted((data / "joined" / "default").glob("*.dsjson"))
            for _, obj in read_lines(path)}


def append_event(data: Path, record: dict) -> None:
    """What a server without the door checks had acknowledged and logged."""
    with open(max((data / "events").glob("events-*.jsonl")), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def others(client: PlacementClient, n: int, prefix: str = "other") -> list[str]:
    """Ordinary callers' decisions, each rewarded on its first slot."""
    ids = []
    for i in range(n):
        result = client.decide({"customer": {"segment": SEGMENTS[i % 3]}}, SLOTS, event_id=f"{prefix}-{i}")
        client.reward(result.event_id, 1.0, slot_id=SLOTS[0])
        ids.append(result.event_id)
    return ids


def assert_not_uniform(client: PlacementClient) -> None:
    for seg in SEGMENTS:
        ranking = client.decide({"customer": {"segment": seg}}, SLOTS).slots[0].ranking
        probabilities = [p for _, p in ranking]
        assert max(probabilities) > 2 * min(probabilities), ranking


# --- reward range --------------------------------------------------------------

@pytest.mark.parametrize("value", [1e39, -1e308, 1e308, 1e6 * (1 + 1e-12), -2e6])
def test_reward_beyond_the_range_is_refused_naming_value_and_range(client, value):
    register_collections(client)
    result = client.decide({"customer": {"segment": "a"}}, SLOTS)
    with pytest.raises(grpc.RpcError) as err:
        client.reward(result.event_id, value, slot_id=SLOTS[0])
    assert err.value.code() == CODE.INVALID_ARGUMENT
    assert repr(value) in err.value.details() and "[-1e+06, 1e+06]" in err.value.details()
    assert client.stats().rewards == 0


def test_hostile_rewards_leave_the_model_usable_and_lose_no_decision(start, tmp_path):
    data = tmp_path / "data"
    server = start(data, **LONG)
    with PlacementClient(server.target) as client:
        register_collections(client)
        victim = client.decide({"customer": {"segment": "a"}}, SLOTS, event_id="victim")
        for value in (1e39, -1e308, 1e308, 1e308):
            with pytest.raises(grpc.RpcError):
                client.reward(victim.event_id, value, slot_id=SLOTS[0])
        client.reward(victim.event_id, 1e6, slot_id=SLOTS[0])  # the range's edge, twice: the sum is clipped
        client.reward(victim.event_id, 1e6, slot_id=SLOTS[0])
        ids = others(client, 20)
        drive(client, 600, seed=12)
        settle(server)
        assert client.stats().pending == 0
        joined = joined_lines(data)
        assert {"victim", *ids} <= set(joined) and len(joined) == 621
        assert joined["victim"]["_outcomes"][0]["_label_cost"] == -1e6
        assert server.engine.learner_errors == 0
        assert_not_uniform(client)
    server.stop()
    again = start(data, **LONG)
    with PlacementClient(again.target) as client:
        assert_not_uniform(client)


def test_an_overflowing_reward_in_an_old_log_is_clipped_on_recovery(start, tmp_path):
    """Rewards acknowledged before the range was checked: two of 1e308 sum to
    inf, one of 1e39 is inf in float32; the join clips, nobody's decision is lost."""
    data = tmp_path / "data"
    server = start(data, **LONG)
    with PlacementClient(server.target) as client:
        register_collections(client)
        for event_id in ("huge", "float32"):
            client.decide({"customer": {"segment": "b"}}, SLOTS, event_id=event_id)
        ids = others(client, 20)
    server.stop()
    for event_id, value in (("huge", 1e308), ("huge", 1e308), ("float32", -1e39)):
        append_event(data, {"kind": "reward", "id": event_id, "slot": SLOTS[1], "value": value, "ts": 1.0})
    again = start(data, **LONG)
    settle(again)
    joined = joined_lines(data)
    assert set(joined) == {"huge", "float32", *ids}
    assert joined["huge"]["_outcomes"][1]["_label_cost"] == -1e6
    assert joined["float32"]["_outcomes"][1]["_label_cost"] == 1e6
    assert again.engine.joiner.stats.failed == 0 and again.engine.learner_errors == 0


def test_placement_import_refuses_rewards_beyond_the_range(tmp_path):
    src = tmp_path / "log.csv"
    src.write_text("collection,prob,revenue\na,0.5,1e39\nb,0.5,-2e6\nc,0.5,999999.5\n")
    out = tmp_path / "out.dsjson"
    proc = subprocess.run([PLACEMENT, "import", str(src), "--out", str(out), "--action", "collection",
                           "--reward", "revenue", "--propensity", "prob"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    text = " ".join((proc.stdout + proc.stderr).split())
    assert "row 1 (event row-1): reward value 1e+39 is outside the reward range [-1e+06, 1e+06]" in text
    assert "row 2 (event row-2): reward value -2000000.0 is outside" in text
    [(_, joined)] = list(read_lines(out))
    assert joined["EventId"] == "row-3" and joined["_outcomes"][0]["_label_cost"] == -999999.5


# --- timestamps ------------------------------------------------------------------

def test_reward_and_activation_times_are_checked_at_the_door(start, tmp_path):
    data = tmp_path / "data"
    server = start(data, **LONG)
    with PlacementClient(server.target) as client:
        register_collections(client)
        before = others(client, 50, "before")
        mail = client.decide({"customer": {"segment": "c"}}, SLOTS, event_id="mail", deferred=True)
        after = others(client, 50, "after")
        cases = [
            (lambda: client.activate(mail.event_id, at=0.0), "before its decision"),
            (lambda: client.activate(mail.event_id, at=YEAR_9999), "in the future"),
            (lambda: client.reward(mail.event_id, 1.0, slot_id=SLOTS[0], at=0.0), "before its decision"),
            (lambda: client.reward(mail.event_id, 1.0, slot_id=SLOTS[0], at=YEAR_9999), "in the future"),
        ]
        for call, message in cases:
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == CODE.INVALID_ARGUMENT, err.value.details()
            assert message in err.value.details() and "mail" in err.value.details()
        client.activate(mail.event_id)
        client.reward(mail.event_id, 1.0, slot_id=SLOTS[0])
        settle(server)
        stats = client.stats()
        assert stats.pending == 0 and stats.joined == 101 and stats.joined_with_reward == 101
    assert set(joined_lines(data)) == {"mail", *before, *after}


def test_an_early_activation_in_an_old_log_loses_no_decision(start, tmp_path):
    """An activation at or before its decision (``at = 0``), acknowledged before
    the door checked it, among ~100 ordinary decisions closing in the same
    join step: after a restart every one of them is joined."""
    data = tmp_path / "data"
    server = start(data, **LONG)
    with PlacementClient(server.target) as client:
        register_collections(client)
        before = others(client, 50, "before")
        client.decide({"customer": {"segment": "c"}}, SLOTS, event_id="mail", deferred=True)
        after = others(client, 50, "after")
    server.stop()
    append_event(data, {"kind": "activate", "id": "mail", "ts": 0.0})
    again = start(data, **LONG)
    settle(again)
    with PlacementClient(again.target) as client:
        assert client.stats().pending == 0
    assert set(joined_lines(data)) == {"mail", *before, *after}
    assert again.engine.joiner.stats.failed == 0


# --- model import ------------------------------------------------------------------

def murmur3_32(data: bytes, seed: int) -> int:
    """VW's uniform_hash (MurmurHash3 x86 32-bit), which chains the header checksum."""
    mask, c1, c2 = 0xFFFFFFFF, 0xCC9E2D51, 0x1B873593

    def mix(k: int) -> int:
        k = (k * c1) & mask
        return (((k << 15) | (k >> 17)) & mask) * c2 & mask

    h, tail = seed & mask, len(data) // 4 * 4
    for i in range(0, tail, 4):
        h ^= mix(int.from_bytes(data[i:i + 4], "little"))
        h = ((((h << 13) | (h >> 19)) & mask) * 5 + 0xE6546B64) & mask
    if data[tail:]:
        h ^= mix(int.from_bytes(data[tail:], "little"))
    h ^= len(data)
    for shift, factor in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        h = ((h ^ (h >> shift)) * factor) & mask
    return h ^ (h >> 16)


def forge_options(model: bytes, extra: str) -> bytes:
    """``model`` with ``extra`` appended to the options its header carries and
    the header checksum recomputed, as anyone can: what a hostile import sends."""
    pos = 4 + struct.unpack_from("<I", model)[0]  # the version string is outside the checksum
    pieces: list[bytes] = []

    def take(n: int) -> bytes:
        nonlocal pos
        pieces.append(model[pos:pos + n])
        pos += n
        return pieces[-1]

    take(struct.unpack("<I", take(4))[0])  # id
    for size in (1, 4, 4, 4, 4):  # 'm', min and max label, bits, lda
        take(size)
    for _ in range(2):  # ngram and skip definitions
        take(3 * struct.unpack("<I", take(4))[0])
    options_at = pos
    take(struct.unpack("<I", take(4))[0])
    options = model[options_at + 4:pos].rstrip(b"\0") + f" {extra}".encode() + b"\0"
    pieces[-2:] = [struct.pack("<I", len(options)), options]
    checksum = 0
    for piece in filter(None, pieces):  # VW hashes each read, and reads nothing for an empty one
        checksum = murmur3_32(piece, checksum)
    head = model[:4 + struct.unpack_from("<I", model)[0]]
    return head + b"".join(pieces) + struct.pack("<II", 4, checksum) + model[pos + 8:]


def trained_model(path: Path, settings: LearningSettings) -> bytes:
    """A --ccb_explore_adf model trained with other settings than the surface's."""
    ws = pyvw.Workspace(vw_arguments(settings))
    for i in range(50):
        ws.learn([f"ccb shared |C.u a{i}", "ccb action |A x", "ccb action |A y", f"ccb slot {i % 2}:1:0.5 |S s"])
    ws.save(str(path))
    ws.finish()
    return path.read_bytes()


def serve(data: Path) -> tuple[subprocess.Popen, str]:
    proc, match = launch(["serve", "--port", "0", "--data-dir", str(data), "--workers", "1"],
                         r"serving on 127\.0\.0\.1:(\d+)")
    target = f"127.0.0.1:{match.group(1)}"
    with grpc.insecure_channel(target) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return proc, target


def test_a_bad_model_import_is_refused_and_changes_nothing(tmp_path):
    """Other VW options, options that write files, a truncated file: each gets
    INVALID_ARGUMENT, CURRENT stays, the server restarts, and no file appears
    outside the data directory."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    proc, target = serve(data)
    try:
        with PlacementClient(target) as client:
            register_collections(client)
            exported = tmp_path / "exported.vw"
            client.export_model(exported)
            good = exported.read_bytes()
            bad = {
                "bits": trained_model(tmp_path / "b10.vw", LearningSettings(bits=10)),
                "bag": trained_model(tmp_path / "bag.vw", LearningSettings(exploration=Exploration("bag", bag_size=3))),
                "ips": trained_model(tmp_path / "ips.vw",
                                     LearningSettings(exploration=Exploration("epsilon"), cb_type="ips")),
                "readable_model": forge_options(good, f"--readable_model {outside}/readable.txt"),
                "final_regressor": forge_options(good, f"--final_regressor {outside}/final.vw"),
                "-f": forge_options(good, f"-f {outside}/short.vw --invert_hash {outside}/inverted.txt"),
                "quoted": forge_options(good, f'"--readable_model" {outside}/quoted.txt'),
                "truncated": good[:-5],
                "truncated learned": trained_model(tmp_path / "learned.vw", LearningSettings())[:-21],
                "header only": good[:120],
            }
            before = client.model_info()
            for name, model in bad.items():
                path = tmp_path / "candidate.vw"
                path.write_bytes(model)
                with pytest.raises(grpc.RpcError) as err:
                    client.import_model(path)
                assert err.value.code() == CODE.INVALID_ARGUMENT, (name, err.value.details())
                if name in ("readable_model", "final_regressor", "-f", "quoted"):
                    assert "may not come from a model file" in err.value.details()
                after = client.model_info()
                assert after.current_version == before.current_version, name
                assert len(after.versions) == len(before.versions), name
            client.decide({"customer": {"segment": "a"}}, SLOTS)
    finally:
        assert stop(proc) == 0
    proc, target = serve(data)
    try:
        with PlacementClient(target) as client:
            assert client.model_info().current_version == before.current_version
            client.decide({"customer": {"segment": "b"}}, SLOTS)
            path = tmp_path / "good.vw"
            path.write_bytes(good)
            assert client.import_model(path).versions[-1].origin == "imported"  # a sound model still imports
    finally:
        assert stop(proc) == 0
    assert list(outside.iterdir()) == []


# --- configuration and files ----------------------------------------------------

def test_a_token_from_the_environment_is_trimmed(start, monkeypatch):
    monkeypatch.setenv("PLACEMENT_ADMIN_TOKEN", "tok\n")
    server = start()
    with PlacementClient(server.target, token="tok") as admin:
        assert admin.model_info().current_version
    with PlacementClient(server.target, token="tok2") as wrong, pytest.raises(grpc.RpcError) as err:
        wrong.model_info()
    assert err.value.code() == CODE.PERMISSION_DENIED


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("token", ["", " ", "\n\t"])
def test_a_blank_token_is_a_configuration_error(tmp_path, token, workers):
    proc = subprocess.run([PLACEMENT, "serve", "--port", "0", "--data-dir", str(tmp_path / "data"),
                           "--workers", str(workers)],
                          env={**os.environ, "PLACEMENT_ADMIN_TOKEN": token}, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "$PLACEMENT_ADMIN_TOKEN is set but empty" in proc.stderr


def test_the_data_directory_is_private(start, tmp_path):
    """0700 directories and 0600 files: decisions, rewards, joins, models and
    the catalog are nobody else's business on a shared host."""
    data = tmp_path / "data"
    server = start(data)
    with PlacementClient(server.target) as client:
        register_collections(client)
        drive(client, 50, seed=5)
        settle(server)
        exported = tmp_path / "exported.vw"
        client.export_model(exported)
        client.import_model(exported)
        client.delete_collection("col-0")
    server.stop()
    modes = {path.relative_to(tmp_path): path.stat().st_mode & 0o777 for path in [data, *data.rglob("*")]}
    assert {p: m for p, m in modes.items() if m != (0o700 if (tmp_path / p).is_dir() else 0o600)} == {}
    assert len(modes) > 10


def test_a_failing_worker_refresh_logs_its_traceback_once_per_error(start, tmp_path, caplog):
    """A broken CURRENT is reported once with its traceback while the worker
    keeps checking it (every request and every 0.2 s) and serves the last
    good model: not a traceback five times a second."""
    data = tmp_path / "data"
    start(data)
    caplog.set_level(logging.DEBUG, logger="server.workers")
    with grpc.insecure_channel(f"unix:{tmp_path}/nobody.sock") as channel:
        worker = WorkerEngine(make_config(data), "t", channel)
        worker.start()
        try:
            good = worker.surface("default").version
            current = data / "models" / "default" / "CURRENT"
            for broken in ("999", "not a number"):  # a version that is not kept; no version at all
                partial = current.with_suffix(".partial")
                partial.write_text(broken)
                os.replace(partial, current)  # as the store writes it: one change, not an empty file first
                _failures(caplog, at_least=1)
                time.sleep(1.2)  # six refresh periods
                assert len(_failures(caplog, at_least=1)) == 1
                assert worker.surface("default").version == good
                caplog.clear()
        finally:
            worker.stop()


def _failures(caplog, at_least: int) -> list[logging.LogRecord]:
    """The worker's load-failure records with a traceback, once there are ``at_least``."""
    for _ in range(300):
        records = [r for r in caplog.records if r.name == "server.workers" and r.exc_info]
        if len(records) >= at_least:
            return records
        time.sleep(0.05)
    raise AssertionError(f"only {len(records)} failures with a traceback seen")
