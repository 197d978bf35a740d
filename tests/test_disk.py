"""A full disk: a Decide that could not be logged is refused UNAVAILABLE (so
clients retry), never answered from memory, health says NOT_SERVING while the
log cannot write, and the server recovers by itself once space returns,
leaving no torn record behind. Real servers in subprocesses on a small tmpfs
(the tests run as root; ``mount`` works on the CI machines)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.client import PlacementClient, collection
from server.eventlog import AppendLog, LogUnwritable

from placement_process import launch

CONFIG = """
[join]
window_seconds = 3600
"""


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 24 MiB file system of its own, unmounted at the end."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Fill the file system, then give back ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 16))
                fh.flush()
        except OSError:
            pass
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def _until(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _big_context(i: int) -> dict:
    """About 60 KB of decision record: bigger than what is left on the disk."""
    return {f"g{g}": {f"f{j}": f"value-{i}-{g}-{j}-" + "x" * 40 for j in range(200)} for g in range(6)}


def _decision_lines(data: Path) -> list[dict]:
    """Every line of every event log; each must be a whole JSON object (no torn record)."""
    out = []
    for path in sorted((data / "events").rglob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"{path}:{number}: torn record left behind") from None
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_full_disk_refuses_unavailable_and_recovers_without_torn_records(small_disk, tmp_path, workers):
    data, config = small_disk / "data", tmp_path / "c.toml"
    config.write_text(CONFIG)
    proc, match = launch(["serve", "--port", "0", "--data-dir", str(data), "--config", str(config),
                          "--workers", str(workers)], r"serving on 127\.0\.0\.1:(\d+)")
    target = f"127.0.0.1:{match.group(1)}"
    try:
        with PlacementClient(target, timeout=20) as client:
            client.put_collections([collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(3)])
            time.sleep(0.5)  # workers pick up the catalog within their refresh period
            acked = {client.decide(_big_context(i), ["homepage"], event_id=f"ok-{i}").event_id for i in range(3)}
            filler = _fill(small_disk, leave=8192)

            with pytest.raises(grpc.RpcError) as failed:
                client.decide(_big_context(99), ["homepage"], event_id="full")
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value.details()
            assert "unwritable" in failed.value.details()
            assert _until(lambda: _health(target) == health_pb2.HealthCheckResponse.NOT_SERVING)
            with pytest.raises(grpc.RpcError) as retried:  # never answered from memory
                client.decide(_big_context(99), ["homepage"], event_id="full")
            assert retried.value.code() == grpc.StatusCode.UNAVAILABLE
            assert all(rec.get("id") != "full" for rec in _decision_lines(data))

            filler.unlink()  # space returns: the server recovers by itself
            assert _until(lambda: _health(target) == health_pb2.HealthCheckResponse.SERVING)
            result = client.decide(_big_context(99), ["homepage"], event_id="full")
            acked.add(result.event_id)
            again = client.decide(_big_context(99), ["homepage"], event_id="full")
            assert again.chosen() == result.chosen()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lines = _decision_lines(data)
    decided = [rec["id"] for rec in lines if rec.get("kind") == "decision"]
    assert acked <= set(decided)
    assert decided.count("full") == 1


def test_a_failed_write_keeps_its_whole_lines_and_cuts_the_torn_rest(small_disk):
    log = AppendLog(small_disk / "log", "events", fsync="always")
    filler = _fill(small_disk, leave=8192)  # room for two 3 KB lines, not three
    lines = [json.dumps({"i": i, "pad": "x" * 3000}) for i in range(3)]
    tickets = [log.submit(line) for line in lines]
    log.wait(tickets[0])
    log.wait(tickets[1])
    with pytest.raises(LogUnwritable, match="No space left"):
        log.wait(tickets[2])
    assert not log.writable
    path = log.segments()[-1]
    assert path.read_text() == lines[0] + "\n" + lines[1] + "\n"  # no torn record
    filler.unlink()
    assert _until(lambda: log.writable)
    log.append(lines[2])
    log.close()
    assert path.read_text().splitlines() == lines
