"""What one decision costs the log and the join: ``python -m bench.pending``.

For the capacity model in /BENCHMARKS.md: the bytes of one decision line and
of its joined line at a config (decided by a real Engine on a fresh data
directory, the default settings), the memory of one item waiting in the
learner's backlog (``server.learner.LearnItem``: its joined line and the
decision's mode and time) against the size the backlog counts it at, and the
memory one pending decision holds in
the coordinator's Joiner while its reward window is open, kept as the position
of its line in a log (``LineRef``), as the coordinator keeps workers'
decisions and the single-process engine keeps its own once written. Measured
with tracemalloc over ``--pending`` decisions added to a Joiner with the
real decision's record (a fresh event id each).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
import uuid
from pathlib import Path


def decision_lines(cands: int, slots: int, seed: int) -> tuple[str, int, tuple[float, float]]:
    """One real decision line at the config, the bytes of its joined line, and
    (measured, counted) bytes of one item of the learner's backlog."""
    from bandit.logformat.events import dumps, joined_to_dsjson
    from bench.inproc import EngineInProc
    from bench.workload import make_workload

    engine = EngineInProc(make_workload(cands, slots, seed))
    try:
        logs = sorted((engine.dir).rglob("*.jsonl")) or sorted(p for p in engine.dir.rglob("*") if p.is_file())
        lines = [ln for p in logs for ln in p.read_text(errors="replace").splitlines() if '"decision"' in ln]
        line = lines[-1]
        event = engine.engine.joiner.get(json.loads(line)["id"])
        joined = len(dumps(joined_to_dsjson(_joined(event))))
        queued = learn_item_bytes(line, 500)
    finally:
        engine.close()
    return line, joined, queued


def learn_item_bytes(line: str, n: int) -> tuple[float, float]:
    """(measured, counted) bytes per item waiting in the learner's backlog, as
    the join hands them over: a LearnItem per joined line, in a LearnBacklog."""
    from bandit.logformat.events import dumps, event_from_record, joined_to_dsjson
    from server.learner import LearnBacklog, LearnItem

    texts = [line.replace(json.loads(line)["id"], uuid.uuid4().hex) for _ in range(n)]
    backlog = LearnBacklog(1 << 40, n)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for text in texts:  # what stays is the item: the rebuilt event is garbage once its line is written
        joined = _joined(event_from_record(json.loads(text)))
        d = joined.decision
        backlog.put_many([LearnItem(d.surface, d.mode, d.timestamp, dumps(joined_to_dsjson(joined)))])
    del joined, d
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n, backlog.depth()[1] / n


def _joined(event):
    """The event as the joiner closes it, unrewarded (the default reward)."""
    from bandit.joiner import Joiner

    j = Joiner(1.0)
    j.add_decision(event)
    return j.close_due(event.timestamp + 2.0)[0]


def pending_bytes(record: dict, n: int) -> float:
    """Bytes per pending decision kept as a LineRef, each with its own id."""
    from bandit.joiner import Joiner
    from bandit.logformat.events import LineRef

    path = Path("/tmp/worker-0/decisions-000001.jsonl")
    # What the joiner reads of a record, parsed afresh per decision (its own id
    # and slot-id strings, as when the coordinator parses a worker's line).
    head = {k: record[k] for k in ("ts", "slots", "deferred") if k in record}
    texts = [json.dumps({**head, "id": uuid.uuid4().hex}) for _ in range(n)]
    joiner = Joiner(3600.0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, text in enumerate(texts):
        joiner.add_logged(json.loads(text), LineRef(str(path), i * 10_000, 10_000))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(joiner) == n
    return (after - before) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pending", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="50x3", help="candidates x slots [50x3]")
    ap.add_argument("--pending", type=int, default=200_000, help="pending decisions to add [200000]")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    cands, slots = (int(x) for x in args.config.lower().split("x"))
    t0 = time.monotonic()
    line, joined, queued = decision_lines(cands, slots, args.seed)
    per = pending_bytes(json.loads(line), args.pending)
    print("| config | decision line B | joined line B | pending decision in the Joiner (LineRef), B | pending measured "
          "| learner backlog item, B (counted as) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| {args.config} | {len(line.encode()) + 1:,} | {joined + 1:,} | {per:,.0f} | {args.pending:,} "
          f"| {queued[0]:,.0f} ({queued[1]:,.0f}) |")
    print(f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
