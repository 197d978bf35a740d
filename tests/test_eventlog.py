"""The append-only logs: group commit, ordering, bounds, torn lines, rotation, tailing."""

from __future__ import annotations

import json
import threading

import pytest

from bandit.logformat.events import LogFormatError, SkippedLines, read_lines
from server.eventlog import AppendLog, LogBacklogFull, Tailer, read_log_dir


def test_group_commit_keeps_submission_order_across_threads(tmp_path):
    log = AppendLog(tmp_path, "events", fsync="always")
    tickets: list[tuple[int, str]] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        for i in range(200):
            with lock:  # ticket order == submission order
                tickets.append((log.submit(json.dumps({"w": k, "i": i})), f"{k}-{i}"))
            log.wait(tickets[-1][0])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    written = [f"{r['w']}-{r['i']}" for r in read_log_dir(tmp_path)]
    assert written == [name for _, name in sorted(tickets)]
    assert len(written) == 800


def test_a_caller_alone_writes_its_own_line_without_a_writer_thread(tmp_path):
    """Group commit without a hand-off: the line is in the file when wait
    returns, written by the waiting thread itself (no thread is started)."""
    log = AppendLog(tmp_path, "events", fsync="always")
    threads = threading.active_count()
    for i in range(3):
        log.wait(log.submit(json.dumps({"i": i})))
        assert [r["i"] for r in read_log_dir(tmp_path)] == list(range(i + 1))
    assert threading.active_count() == threads
    log.close()


def test_lines_queued_during_a_write_go_in_the_next_one_and_every_waiter_returns(tmp_path):
    """While one caller's write is stuck (the disk lock held), the others
    queue and wait; once it ends, one of them writes all of theirs, in
    submission order, and each returns only after its line is in the file."""
    log = AppendLog(tmp_path, "events")
    order = threading.Lock()
    returned: list[int] = []

    def caller(i: int) -> None:
        with order:
            ticket = log.submit(json.dumps({"i": i}))
        log.wait(ticket)
        assert i in [r["i"] for r in read_log_dir(tmp_path)]
        returned.append(i)

    with log._lock:  # the first write blocks here, holding nothing the others need to queue
        first = threading.Thread(target=caller, args=(0,))
        first.start()
        while not log._writing:
            threading.Event().wait(0.001)
        others = [threading.Thread(target=caller, args=(i,)) for i in range(1, 6)]
        for t in others:
            t.start()
        while len(log._queue) < 5:
            threading.Event().wait(0.001)
        assert returned == []
    for t in [first, *others]:
        t.join(timeout=30)
    assert sorted(returned) == list(range(6))
    assert [r["i"] for r in read_log_dir(tmp_path)] == list(range(6))
    log.barrier()
    log.close()


def test_a_line_nobody_waits_for_is_written_by_the_next_barrier(tmp_path):
    log = AppendLog(tmp_path, "events")
    log.submit('{"a":1}')
    log.barrier()
    assert list(read_log_dir(tmp_path)) == [{"a": 1}]
    log.close()


@pytest.mark.parametrize("fsync", ["batch", "always", "never"])
def test_batch_fsync_is_the_logs_own_thread_never_a_callers(tmp_path, fsync):
    """fsync="batch": a caller's line is in the file when wait returns and the
    fsync is left to the log's own thread (stopped by close); "always" and
    "never" start none."""
    before = set(threading.enumerate())  # other tests' logs may still have theirs
    log = AppendLog(tmp_path, "events", fsync=fsync, batch_seconds=0.01)
    log.wait(log.submit('{"a":1}'))
    assert list(read_log_dir(tmp_path)) == [{"a": 1}]
    syncers = [t for t in set(threading.enumerate()) - before if t.name == "events-fsync"]
    assert len(syncers) == (fsync == "batch")
    log.close()
    assert not any(t.is_alive() for t in syncers)


def test_backlog_is_bounded(tmp_path):
    log = AppendLog(tmp_path, "events", max_pending=5)
    with log._lock:  # the disk is stuck: the writer cannot write, but may hold one batch (<= 5)
        for _ in range(11):
            try:
                log.submit("{}")
            except LogBacklogFull:
                break
        else:
            raise AssertionError("the queue grew past its bound")
    log.close()


def test_torn_lines_are_skipped_and_sealed(tmp_path, caplog):
    path = tmp_path / "events-000001.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    assert [obj["a"] for _, obj in read_lines(path)] == [1, 2]
    assert "events-000001.jsonl:3: torn line skipped" in caplog.text
    log = AppendLog(tmp_path, "events")  # reopening seals the torn line
    log.append('{"a": 4}')
    log.close()
    assert [obj["a"] for obj in read_log_dir(tmp_path)] == [1, 2, 4]
    skipped = SkippedLines()  # torn in the middle now: skipped and counted, with file and line, by every reader
    assert [obj["a"] for _, obj in read_lines(path, skipped=skipped)] == [1, 2, 4]
    assert skipped.where == [(str(path), 3)]
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(LogFormatError, match="events-000001.jsonl:2: not a JSON object"):
        list(read_lines(path))  # valid JSON that is no record is a wrong file, not a torn line


def test_rotation_and_tailing(tmp_path):
    root = tmp_path / "events"
    writer = AppendLog(root / "worker-a", "events", segment_bytes=200)
    tail = Tailer(root, "worker-*")
    for i in range(30):
        writer.append(json.dumps({"i": i, "pad": "x" * 20}))
    assert len(writer.segments()) > 3
    seen = [rec["i"] for rec, _ in tail.poll()]
    late = AppendLog(root / "worker-b", "events")  # a worker that appears later
    late.append(json.dumps({"i": 100}))
    writer.append(json.dumps({"i": 30}))
    seen += [rec["i"] for rec, _ in tail.poll()]
    assert seen == list(range(30)) + [30, 100]
    assert tail.poll() == []


def test_tailed_lines_are_read_back_from_where_they_are(tmp_path):
    """The coordinator keeps a worker's pending decision as a LineRef: its bytes
    in the worker's log, read back exactly (multi-byte text, across rotation)."""
    root = tmp_path / "events"
    writer = AppendLog(root / "worker-a", "events", segment_bytes=300)
    tail = Tailer(root, "worker-*")
    lines = [json.dumps({"i": i, "name": "Mütter-Tag ✿" * (i % 3)}, ensure_ascii=False) for i in range(40)]
    for line in lines[:25]:
        writer.append(line)
    got = tail.poll()
    for line in lines[25:]:
        writer.append(line)
    got += tail.poll()
    assert len(writer.segments()) > 3
    assert [ref.read() for _, ref in got] == lines
    assert [rec for rec, _ in got] == [json.loads(line) for line in lines]


def test_positions_after_a_sealed_torn_line_point_at_the_lines(tmp_path):
    """A log reopened on a torn tail seals it with a newline: the positions it
    reports afterwards (where a located line is, end, barrier: what decisions
    and checkpoints name) count that byte, so a line read back from its
    position is the line written, and a write cut back after a failure never
    eats a byte of a whole line."""
    first = AppendLog(tmp_path, "events", fsync="never")
    first.append('{"a":1}')
    first.close()
    segment = first.segments()[-1]
    with open(segment, "ab") as fh:
        fh.write(b'{"torn')  # a crash mid-write
    log = AppendLog(tmp_path, "events", fsync="never")
    ticket = log.submit('{"b":2}', locate=True)
    log.wait(ticket)
    ref = log.where(ticket)
    data = segment.read_bytes()
    assert data[ref.offset:ref.offset + ref.length] == b'{"b":2}'
    assert log.end() == log.barrier() == (1, len(data))
    log.close()
