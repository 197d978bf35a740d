"""What a checkpoint costs the decides running beside it, at 8,000, 50,000
and 200,000 pending decisions (200,000 is ``limits.max_pending_decisions``:
a server at a steady rate fills it once its window is full).

A checkpoint (every ``join.checkpoint_seconds``) holds the engine's lock,
which every decide waits for, while it captures the joiner, then builds and
writes the snapshot on its own thread, where its Python holds the GIL every
decide needs. Measured in one process on a real engine (50x3), with the
pending decisions added as logged ones (where their line is, as a restart or
another worker's log gives them):

- the checkpoint's own time (``Engine.checkpoint``, the file's fsync included);
- the longest wait to take the engine's lock during it (a probe thread);
- decides in a loop on a third thread: their median latency and their
  longest in 2 s without a checkpoint, and their longest during one;
- what the pending decisions cost the garbage collector: objects it tracks
  per pending decision, and one full collection's time.

    .venv/bin/python -m bench.checkpoint_lock [--pending 8000,50000,200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bandit.logformat.events import LineRef
from bench.workload import make_workload


class _Probe(threading.Thread):
    """Runs ``step`` in a loop and keeps each step's duration."""

    def __init__(self, step, pause: float = 0.0):
        super().__init__(daemon=True)
        self.step, self.pause, self.times, self.stopped = step, pause, [], threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            t = time.perf_counter()
            self.step()
            self.times.append(time.perf_counter() - t)
            if self.pause:
                time.sleep(self.pause)

    def worst(self, start: int) -> float:
        return max(self.times[start:], default=0.0)


def _fill(engine, n: int) -> None:
    """Pending decisions as a restart finds them: a record and where its line is."""
    path = Path(engine.config.data_dir) / "events" / "events-000001.jsonl"
    now = engine.clock()
    slots = [{"id": "top"}, {"id": "middle"}, {"id": "bottom"}]
    with engine._lock:
        have = len(engine.joiner)
        for i in range(have, n):
            engine.joiner.add_logged({"id": f"fill{i:028x}", "ts": now, "slots": slots}, LineRef(str(path), i * 12_000, 11_999))


def _collector(base: int, pending: int) -> tuple[float, float]:
    """Objects the garbage collector tracks per pending decision (beyond
    ``base``, counted before any was added), and one full collection's time."""
    gc.collect()
    gc.collect()  # a tuple is untracked when a collection finds it holds only untracked objects
    tracked = (len(gc.get_objects()) - base) / pending
    t = time.perf_counter()
    gc.collect()
    return tracked, 1e3 * (time.perf_counter() - t)


def measure(pending: list[int], repeats: int) -> list[dict]:
    from bench.inproc import EngineInProc
    from server.config import load_config
    from server.engine import Engine

    eng = EngineInProc(make_workload(50, 3, 7))
    eng.engine.stop()  # replaced by one that never checkpoints on its own
    shutil.rmtree(eng.dir, ignore_errors=True)
    eng.dir = Path(tempfile.mkdtemp(prefix="bench-checkpoint-"))
    eng.engine = Engine(load_config(None, port=0, data_dir=eng.dir, join={"checkpoint_seconds": 1e9},
                                    limits={"max_pending_decisions": 2 * max(pending)}))
    eng.engine.start()
    rows = []
    gc.collect()
    base = len(gc.get_objects())
    try:
        for n in pending:
            _fill(eng.engine, n)
            tracked, collection_ms = _collector(base, len(eng.engine.joiner))
            lock = eng.engine._lock
            probes = {"lock": _Probe(lambda: (lock.acquire(), lock.release()), pause=0.0005),
                      "decide": _Probe(eng.step)}
            for p in probes.values():
                p.start()
            started = time.monotonic()
            while len(probes["decide"].times) < 500 and time.monotonic() - started < 30:
                time.sleep(0.1)
            calm = statistics.median(probes["decide"].times)
            quiet = len(probes["decide"].times)
            time.sleep(2.0)
            calm_worst = probes["decide"].worst(quiet)  # 2 s without a checkpoint
            walls, worst = [], {name: [] for name in probes}
            for _ in range(repeats):
                marks = {name: len(p.times) for name, p in probes.items()}
                t = time.perf_counter()
                eng.engine.checkpoint()
                walls.append(time.perf_counter() - t)
                time.sleep(0.3)  # the probes' step that spans the checkpoint's end lands
                for name, p in probes.items():
                    worst[name].append(p.worst(marks[name]))
            for p in probes.values():
                p.stopped.set()
                p.join()
            size = os.path.getsize(eng.engine.checkpoint_path)
            row = {"pending": len(eng.engine.joiner), "checkpoint_ms": 1e3 * statistics.median(walls),
                   "lock_wait_ms": 1e3 * statistics.median(worst["lock"]),
                   "decide_p50_ms": 1e3 * calm, "decide_worst_calm_ms": 1e3 * calm_worst, "decide_worst_ms": 1e3 * statistics.median(worst["decide"]),
                   "file_mb": size / 1e6, "tracked_per_pending": tracked, "full_collection_ms": collection_ms}
            rows.append(row)
            print(f"pending {row['pending']:>7,}: checkpoint {row['checkpoint_ms']:7.1f} ms "
                  f"({row['file_mb']:.1f} MB); longest lock wait {row['lock_wait_ms']:7.1f} ms; decide p50 {row['decide_p50_ms']:.2f} ms, "
                  f"longest in 2 s without one {row['decide_worst_calm_ms']:5.1f} ms, "
                  f"longest during it {row['decide_worst_ms']:7.1f} ms (medians of {repeats}); "
                  f"GC: {tracked:.2f} tracked objects per pending, a full collection {collection_ms:.1f} ms",
                  flush=True)
    finally:
        eng.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pending", default="8000,50000,200000", help="pending decisions, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"load average at start {os.getloadavg()[0]:.1f}")
    measure([int(x) for x in args.pending.split(",")], args.repeats)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
