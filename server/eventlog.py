"""Durable, append-only line logs (the event log and the joined log).

Durability rule: ``append`` returns only after the line is written to the
operating system (so a killed server loses nothing it acknowledged). With
``fsync="always"`` it also waits for the disk (survives power loss); with
``"batch"`` the file is fsynced at most every ``batch_seconds`` by the writer;
``"never"`` leaves that to the OS. Files rotate into numbered segments.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from bandit.logformat.events import LineRef, read_lines

log = logging.getLogger(__name__)
_SEGMENT = re.compile(r"^(?P<prefix>.+)-(?P<n>\d{6})\.(?P<ext>\w+)$")


PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600  # the data directory is nobody else's business


def private_dir(path: Path) -> Path:
    """``path`` and whichever of its parents are missing, created readable by
    this user only (``mkdir(parents=True)`` would give the parents default modes)."""
    path = Path(path)
    for missing in reversed([p for p in (path, *path.parents) if not p.exists()]):
        missing.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    return path


def private_opener(path: str, flags: int) -> int:
    """For ``open(..., opener=private_opener)``: a new file is created 0600."""
    return os.open(path, flags, PRIVATE_FILE)


class LogBacklogFull(RuntimeError):
    """More lines waiting for the disk than the log's bound: shed load."""


class AppendLog:
    def __init__(self, directory: Path, prefix: str, ext: str = "jsonl", fsync: str = "batch",
                 segment_bytes: int = 256 * 1024 * 1024, batch_seconds: float = 0.05,
                 max_pending: int = 100_000):
        self.directory = private_dir(directory)
        self.prefix, self.ext = prefix, ext
        self.fsync, self.segment_bytes, self.batch_seconds = fsync, segment_bytes, batch_seconds
        self._lock = threading.Lock()
        segments = self.segments()
        self._index = _number(segments[-1]) if segments else 1
        self._fh = self._open()
        self._last_sync = time.monotonic()
        # Group commit: request threads queue lines and wait; one writer thread
        # writes (and fsyncs) whatever has queued up in one go.
        self.max_pending = max_pending
        self._queue: list[bytes] = []
        self._queued = self._written = 0  # sequence numbers
        self._failure: BaseException | None = None
        self._cond = threading.Condition()
        self._writer: threading.Thread | None = None
        self._locate: set[int] = set()  # tickets whose line position is wanted (see where)
        self._where: dict[int, LineRef] = {}

    def segments(self) -> list[Path]:
        return segments(self.directory, self.prefix, self.ext)

    def _open(self):
        path = self.directory / f"{self.prefix}-{self._index:06d}.{self.ext}"
        fh = open(path, "ab", opener=private_opener)
        if fh.tell() > 0 and not _ends_with_newline(path):
            fh.write(b"\n")  # seal a torn line left by a crash; readers skip it
            fh.flush()
        return fh

    def append(self, line: str) -> None:
        self.append_many((line,))

    def append_many(self, lines: Iterable[str]) -> None:
        data = "".join(f"{line}\n" for line in lines).encode("utf-8")
        if data:
            self._write(data)

    def submit(self, line: str, locate: bool = False) -> int:
        """Queue a line for the writer thread; returns its ticket for :meth:`wait`.
        Lines are written in submission order. With ``locate``, :meth:`where`
        tells where the line was written."""
        data = f"{line}\n".encode("utf-8")
        with self._cond:
            if self._failure is not None:
                raise OSError(f"event log unwritable: {self._failure}")
            if len(self._queue) >= self.max_pending:
                raise LogBacklogFull(f"{len(self._queue)} log lines waiting for the disk")
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name=f"{self.prefix}-writer", daemon=True)
                self._writer.start()
            self._queue.append(data)
            self._queued += 1
            if locate:
                self._locate.add(self._queued)
            self._cond.notify_all()
            return self._queued

    def wait(self, ticket: int) -> None:
        """Return once the line is written as the durability rule says."""
        with self._cond:
            while self._written < ticket:
                if self._failure is not None:
                    raise OSError(f"event log unwritable: {self._failure}")
                self._cond.wait()

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                batch, self._queue = self._queue, []
                last = self._queued
            try:
                path, offset = self._write(b"".join(batch))
            except BaseException as exc:  # disk full, I/O error: waiters get the error
                log.exception("event log write failed")
                with self._cond:
                    self._failure = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._located(batch, last, path, offset)
                self._written = last
                self._cond.notify_all()

    def _located(self, batch: list[bytes], last: int, path: Path, offset: int) -> None:
        """Record where the wanted lines of a written batch are (under the condition)."""
        if not self._locate:
            return
        for ticket, data in enumerate(batch, start=last - len(batch) + 1):
            if ticket in self._locate:
                self._locate.discard(ticket)
                self._where[ticket] = LineRef(path, offset, len(data) - 1)
            offset += len(data)

    def where(self, ticket: int) -> LineRef | None:
        """Where a line submitted with ``locate`` was written (once it is: after
        :meth:`wait`); asked once per ticket."""
        with self._cond:
            return self._where.pop(ticket, None)

    def barrier(self) -> tuple[int, int]:
        """Wait until every line submitted so far is written; the (segment,
        offset) after them. Under the caller's lock that stops new submissions,
        it is exactly the end of what the caller has logged."""
        with self._cond:
            last = self._queued
        if self._writer is not None:
            self.wait(last)
        with self._lock:
            self._fh.flush()
            return self._index, self._fh.tell()

    def end(self) -> tuple[int, int]:
        """(segment, offset) after the last line written with :meth:`append_many`."""
        with self._lock:
            return self._index, self._fh.tell()

    def _write(self, data: bytes) -> tuple[Path, int]:
        """Write, sync as configured, rotate when full; where ``data`` went."""
        with self._lock:
            where = Path(self._fh.name), self._fh.tell()
            self._fh.write(data)
            self._fh.flush()
            self._sync()
            if self._fh.tell() >= self.segment_bytes:
                self._rotate()
            return where

    def _sync(self) -> None:
        if self.fsync == "always":
            os.fsync(self._fh.fileno())
        elif self.fsync == "batch" and time.monotonic() - self._last_sync >= self.batch_seconds:
            os.fsync(self._fh.fileno())
            self._last_sync = time.monotonic()

    def _rotate(self) -> None:
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._index += 1
        self._fh = self._open()

    def read(self) -> Iterator[dict]:
        """Every record of every segment, in order (torn last lines skipped)."""
        with self._lock:
            self._fh.flush()
        yield from read_log_dir(self.directory, self.prefix, self.ext)

    def close(self) -> None:
        with self._cond:
            last = self._queued
        if self._writer is not None and self._failure is None:
            self.wait(last)
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                if self.fsync != "never":
                    os.fsync(self._fh.fileno())
                self._fh.close()


def segments(directory: Path, prefix: str = "events", ext: str = "jsonl") -> list[Path]:
    found = [p for p in Path(directory).glob(f"{prefix}-*.{ext}") if _SEGMENT.match(p.name)]
    return sorted(found, key=_number)


def read_log_dir(directory: Path, prefix: str = "events", ext: str = "jsonl") -> Iterator[dict]:
    """Every record of a log directory written by another process, in order."""
    for path in segments(directory, prefix, ext):
        for _, obj in read_lines(path, strict=False):
            yield obj


WORKER_DIRS = "worker-*"  # DATA/events/worker-K: one serving worker's decision log


def worker_dirs(events_dir: Path) -> list[Path]:
    """The serving workers' decision logs under ``DATA/events`` (any topology ever run)."""
    return sorted(p for p in Path(events_dir).glob(WORKER_DIRS) if p.is_dir())


Position = tuple[int, int]  # (segment number, byte offset): everything before it has been read
CHUNK_BYTES = 16 << 20


class Tailer:
    """Follows the log directories under ``root`` matching ``pattern`` that
    other processes (possibly on other hosts, over shared storage) append to.
    Directories that appear later are followed from their start; only complete
    lines are returned (a line being written is left for the next call). Where
    it has read to (:meth:`positions`) is what a checkpoint keeps, so a restart
    reads on from there (:meth:`seek`) and nothing logged meanwhile is skipped."""

    def __init__(self, root: Path, pattern: str, prefix: str = "events", ext: str = "jsonl"):
        self.root, self.pattern = Path(root), pattern
        self.prefix, self.ext = prefix, ext
        self._pos: dict[Path, Position] = {}
        self._lock = threading.Lock()
        self.lines_read = 0  # complete lines read so far (what a restart costs)

    def directories(self) -> list[Path]:
        return sorted(p for p in self.root.glob(self.pattern) if p.is_dir())

    def positions(self) -> dict[Path, Position]:
        with self._lock:
            return dict(self._pos)

    def seek(self, positions: dict[Path, Position]) -> None:
        """Read on from these positions (a checkpoint's) instead of the starts."""
        with self._lock:
            self._pos.update(positions)

    def poll(self) -> list[tuple[dict, LineRef]]:
        """New records with where their lines are, oldest first per directory."""
        with self._lock:
            return list(self._follow())

    def follow(self) -> Iterator[tuple[dict, LineRef]]:
        """:meth:`poll` a chunk at a time (recovery: all of a long log without
        holding it in memory). One reader at a time: the caller's to ensure."""
        yield from self._follow()

    def _follow(self) -> Iterator[tuple[dict, LineRef]]:
        for directory in self.directories():
            index, offset = self._pos.get(directory, (0, 0))
            for path in segments(directory, self.prefix, self.ext):
                number = _number(path)
                if number < index:
                    continue
                start = offset if number == index else 0
                for chunk_start, complete in _chunks(path, start):
                    records = _records(path, complete, chunk_start)
                    self.lines_read += complete.count(b"\n")
                    self._pos[directory] = (number, chunk_start + len(complete))
                    yield from records
                index, offset = self._pos.get(directory, (number, start))
                if (index, offset) < (number, start):
                    self._pos[directory] = index, offset = number, start


def position_of(ref: LineRef) -> Position:
    """The (segment, offset) at which a line read from a log begins."""
    return _number(Path(ref.path)), ref.offset


def _chunks(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """(offset, complete lines) of ``path`` from ``start``, a chunk at a time."""
    with open(path, "rb") as fh:
        fh.seek(start)
        carry = b""
        while True:
            data = fh.read(CHUNK_BYTES)
            if not data:
                return
            data = carry + data
            cut = data.rfind(b"\n") + 1
            if cut:
                yield start, data[:cut]
                start += cut
            carry = data[cut:]


def tail_lines(directory: Path, max_bytes: int, prefix: str = "events", ext: str = "jsonl") -> Iterator[bytes]:
    """The complete lines of a log directory, newest first, up to about
    ``max_bytes`` read from its end (a worker's memory of recent decisions)."""
    left = max_bytes
    for path in reversed(segments(directory, prefix, ext)):
        size = path.stat().st_size
        start = max(0, size - left)
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(size - start)
        left -= len(data)
        lines = data.split(b"\n")[:-1]  # the last piece is a line being written (or nothing)
        if start > 0:
            lines = lines[1:]  # cut in the middle
        yield from reversed(lines)
        if left <= 0:
            return


def _records(path: Path, data: bytes, start: int) -> list[tuple[dict, LineRef]]:
    """The records of ``data`` (complete lines read at byte ``start`` of ``path``)."""
    records = []
    offset = start
    for raw in data.split(b"\n")[:-1]:
        try:
            records.append((json.loads(raw), LineRef(path, offset, len(raw))))
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("%s: unreadable line skipped", path)
        offset += len(raw) + 1
    return records


def _number(path: Path) -> int:
    match = _SEGMENT.match(path.name)
    return int(match["n"]) if match else 0


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
