"""``pin_cpus``: each serving process on one allowed CPU, read back from the
kernel (/proc) of a real `placement serve`, and decisions still served."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from placement_process import launch, stop
from server import affinity
from server.client import PlacementClient, collection

pytestmark = pytest.mark.skipif(not affinity.supported(), reason="CPU pinning is Linux only")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _is_worker(pid: int) -> bool:
    """A spawned serving worker (not multiprocessing's resource tracker)."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    return b"spawn_main" in cmdline


def _thread_cpus(pid: int) -> set[frozenset[int]]:
    """The CPU sets of every thread of ``pid``."""
    return {frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{pid}/task")}


def _serve(tmp_path: Path, workers: int, *flags: str):
    return launch(["serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--workers", str(workers), *flags],
                  r"serving on 127\.0\.0\.1:(\d+) \(.*\)")


def _decides(port: str) -> None:
    with PlacementClient(f"127.0.0.1:{port}", timeout=30) as client:
        for n in range(20):  # enough calls to reach every worker of the shared port, most likely
            result = client.decide({"u": {"n": float(n)}}, ["homepage", "email"],
                                   [collection(c, {"c": {"id": c}}) for c in ("summer", "school", "famous")])
            assert len(result.slots) == 2


def test_round_robin_over_the_allowed_cpus_not_0_to_n():
    assert [affinity.cpu_for(i, [3, 5]) for i in range(5)] == [3, 5, 3, 5, 3]
    with pytest.raises(ValueError):
        affinity.cpu_for(0, [])


def test_each_worker_pinned_to_its_own_cpu_the_coordinator_free(tmp_path):
    allowed = affinity.allowed_cpus()
    proc, match = _serve(tmp_path, 2, "--pin-cpus")
    try:
        assert "each pinned to a CPU" in match.group(0)
        workers = [pid for pid in _children(proc.pid) if _is_worker(pid)]
        assert len(workers) == 2
        cpus = []
        for pid in workers:
            sets = _thread_cpus(pid)
            assert len(sets) == 1 and len(next(iter(sets))) == 1, sets  # every thread, one CPU
            cpus.append(next(iter(next(iter(sets)))))
        assert sorted(cpus) == sorted(affinity.cpu_for(i, allowed) for i in range(2))
        assert _thread_cpus(proc.pid) == {frozenset(allowed)}  # joins and learns wherever it can
        _decides(match.group(1))
    finally:
        assert stop(proc) == 0


def test_one_process_pinned_and_unpinned_by_default(tmp_path):
    allowed = affinity.allowed_cpus()
    proc, match = _serve(tmp_path / "pinned", 1, "--pin-cpus")
    try:
        assert _thread_cpus(proc.pid) == {frozenset({allowed[0]})}
        _decides(match.group(1))
    finally:
        assert stop(proc) == 0
    proc, match = _serve(tmp_path / "default", 1)
    try:
        assert "pinned" not in match.group(0)
        assert _thread_cpus(proc.pid) == {frozenset(allowed)}
    finally:
        assert stop(proc) == 0


def test_pin_cpus_must_be_a_boolean(tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text('pin_cpus = "yes"\n')
    from server.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="pin_cpus 'yes' is not true or false"):
        load_config(config)
