"""Durable, append-only line logs (the event log and the joined log).

Durability rule: ``append`` returns only after the line is written to the
operating system (so a killed server loses nothing it acknowledged). With
``fsync="always"`` it also waits for the disk (survives power loss); with
``"batch"`` the file is fsynced every ``batch_seconds`` (while lines come) by
a thread of its own, which no caller waits for;
``"never"`` leaves that to the OS. Files rotate into numbered segments.

A write is whole lines or nothing: when the disk refuses (full, I/O error)
the torn rest is cut back to the last whole line, the waiters whose lines are
not in the file get LogUnwritable, and ``writable`` is False until a write or
a probe succeeds again (health follows it).
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


class LogUnwritable(OSError):
    """The log could not take a line (disk full, I/O error): nothing of it is
    in the file, so the caller may retry; the log recovers by itself once
    writes succeed again."""


class WriteFailed(OSError):
    """A write that failed after ``kept`` bytes of complete lines (the rest cut back)."""

    def __init__(self, kept: int, path: Path, offset: int):
        super().__init__(f"write failed after {kept} bytes")
        self.kept = kept
        self.path, self.offset = path, offset  # where the write began


class Ticket:
    """One submitted line: :meth:`AppendLog.wait` returns once it is written,
    or raises what kept it from the file; ``ref`` is where it was written
    (when submitted with ``locate``)."""

    __slots__ = ("seq", "done", "error", "locate", "ref")

    def __init__(self, seq: int, locate: bool = False) -> None:
        self.seq = seq  # submission order
        self.done = False
        self.error: BaseException | None = None
        self.locate = locate
        self.ref: LineRef | None = None

    def __lt__(self, other: "Ticket") -> bool:
        return self.seq < other.seq


class AppendLog:
    def __init__(self, directory: Path, prefix: str, ext: str = "jsonl", fsync: str = "batch",
                 segment_bytes: int = 256 * 1024 * 1024, batch_seconds: float = 0.05,
                 max_pending: int = 100_000, probe_seconds: float = 0.5):
        self.directory = private_dir(directory)
        self.prefix, self.ext = prefix, ext
        self.fsync, self.segment_bytes, self.batch_seconds = fsync, segment_bytes, batch_seconds
        self._lock = threading.Lock()
        segments = self.segments()
        self._index = _number(segments[-1]) if segments else 1
        self._fd = self._open()
        # fsync="batch": the lines written since the last fsync, which a
        # thread of the log's own does every batch_seconds (see _sync).
        self._dirty = False
        self._syncer: threading.Thread | None = None
        self._closing = threading.Event()
        # Group commit without a writer thread: request threads queue lines;
        # the first to wait while no write is under way writes
        # whatever has queued up, its own line and the others', in one go, and
        # the others wait for that write (see _until_written).
        self.max_pending = max_pending
        self._queue: list[tuple[bytes, Ticket]] = []
        self._cond = threading.Condition()
        self._writing = False
        self._last: Ticket | None = None
        # The last write's failure, until a write (or a probe) succeeds again.
        self.failure: BaseException | None = None
        self.failures = 0
        self.probe_seconds = probe_seconds
        self._last_probe = 0.0

    def segments(self) -> list[Path]:
        return segments(self.directory, self.prefix, self.ext)

    def _path(self) -> Path:
        return self.directory / f"{self.prefix}-{self._index:06d}.{self.ext}"

    def _open(self) -> int:
        """Unbuffered, so what is in the file is exactly what :meth:`_write`
        reports written: a failed write can be cut back to the last good line."""
        path = self._path()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
        if os.fstat(fd).st_size > 0 and not _ends_with_newline(path):
            self._write_all(fd, b"\n")  # seal a torn line left by a crash; readers skip it
        self._size = os.fstat(fd).st_size  # after the seal: offsets and cut-backs count it
        return fd

    @property
    def writable(self) -> bool:
        """False while the last write failed; a probe (at most every
        ``probe_seconds``) finds out whether space or the device is back."""
        if self.failure is not None and time.monotonic() - self._last_probe >= self.probe_seconds:
            self._probe()
        return self.failure is None

    def _probe(self) -> None:
        self._last_probe = time.monotonic()
        probe = self.directory / f".{self.prefix}.probe"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
            try:
                self._write_all(fd, bytes(PROBE_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)
        except OSError as exc:
            log.debug("%s log still unwritable: %r", self.prefix, exc)
            return
        log.warning("%s log in %s writable again", self.prefix, self.directory)
        self.failure = None

    def append(self, line: str) -> None:
        self.append_many((line,))

    def append_many(self, lines: Iterable[str]) -> None:
        """Written before it returns; WriteFailed (its ``kept`` bytes of whole
        lines are in the file) when the disk refuses."""
        data = "".join(f"{line}\n" for line in lines).encode("utf-8")
        if data:
            self._write(data)

    def submit(self, line: str, locate: bool = False) -> Ticket:
        """Queue a line; returns its ticket for :meth:`wait`, which writes it
        (nothing is written until someone waits). Lines are written in
        submission order. With ``locate``, :meth:`where` tells where the line
        was written."""
        data = f"{line}\n".encode("utf-8")
        with self._cond:
            ticket = Ticket(self._last.seq + 1 if self._last is not None else 1, locate)
            if len(self._queue) >= self.max_pending:
                raise LogBacklogFull(f"{len(self._queue)} log lines waiting for the disk")
            self._queue.append((data, ticket))
            self._last = ticket
        return ticket

    def wait(self, ticket: Ticket) -> None:
        """Return once the line is written as the durability rule says;
        LogUnwritable when it could not be (none of it is in the file)."""
        self._until_written(ticket)
        if ticket.error is not None:
            raise LogUnwritable(f"{self.prefix} log unwritable, nothing recorded: {ticket.error}")

    def _until_written(self, ticket: Ticket) -> None:
        """Group commit: while a write is under way, wait for it; otherwise
        write everything queued so far (``ticket``'s line among it) in this
        thread. No hand-off to a writer thread and back: a caller alone writes
        its own line at once, and callers that queue during a write share the
        next one."""
        with self._cond:
            while not ticket.done:
                if self._writing:
                    self._cond.wait()
                else:
                    self._write_queued()

    def _write_queued(self) -> None:
        """Write the queued lines as one batch and settle their tickets (called
        holding ``_cond``, which is released during the write)."""
        batch, self._queue = self._queue, []
        self._writing = True
        self._cond.release()
        settled = False
        try:
            self._write_batch(batch)
            settled = True
        finally:
            self._cond.acquire()
            self._writing = False
            if not settled:  # interrupted (never a plain error, see _write_batch): no waiter hangs
                for _, ticket in batch:
                    if not ticket.done:
                        ticket.error, ticket.done = RuntimeError("log write interrupted"), True
            self._cond.notify_all()

    def _write_batch(self, batch: list[tuple[bytes, Ticket]]) -> None:
        kept, error = None, None
        try:
            path, offset = self._write(b"".join(data for data, _ in batch))
        except WriteFailed as exc:  # disk full, I/O error: the lines not in the file get the error
            kept, error, path, offset = exc.kept, exc.__cause__, exc.path, exc.offset
        except Exception as exc:  # noqa: BLE001 -- never leave a waiter hanging
            log.exception("%s log write failed", self.prefix)
            kept, error, path, offset = 0, exc, self._path(), 0
        end, where = 0, str(path)
        for data, ticket in batch:
            if ticket.locate:
                ticket.ref = LineRef(where, offset + end, len(data) - 1)
            end += len(data)
            ticket.error = error if kept is not None and end > kept else None
            ticket.done = True  # last: a reader that sees it done sees its ref and error

    def where(self, ticket: Ticket) -> LineRef | None:
        """Where a line submitted with ``locate`` was written (once it is: after
        :meth:`wait`)."""
        return ticket.ref if ticket.done and ticket.error is None else None

    def barrier(self) -> tuple[int, int]:
        """Wait until every line submitted so far is written (or refused); the
        (segment, offset) after them. Under the caller's lock that stops new
        submissions, it is exactly the end of what the caller has logged."""
        with self._cond:
            last = self._last
        if last is not None:
            self._until_written(last)
        return self.end()

    def end(self) -> tuple[int, int]:
        """(segment, offset) after the last line written."""
        with self._lock:
            return self._index, self._size

    def _write(self, data: bytes) -> tuple[Path, int]:
        """Whole lines only: when a write fails, the lines it completed stay
        (readers of the file may have seen them) and the torn rest is cut back,
        so no torn record is left for the next append. WriteFailed tells how
        many bytes of ``data`` were kept. Where ``data`` went (file, offset)."""
        with self._lock:
            good = self._size
            where = self._path(), good
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
                self._size = good + len(data)
                self._sync()
            except OSError as exc:
                written = len(data) - len(view)
                kept = data.rfind(b"\n", 0, written) + 1
                self._cut_back(good + kept, exc)
                raise WriteFailed(kept, *where) from exc
            self.failure = None
            if self._size >= self.segment_bytes:
                self._rotate()
            return where

    def _cut_back(self, good: int, exc: OSError) -> None:
        self.failures += 1
        self.failure = exc
        self._last_probe = time.monotonic()
        try:
            os.ftruncate(self._fd, good)
            self._size = good
        except OSError:  # the next write seals what is left; readers skip a torn line
            self._size = os.fstat(self._fd).st_size
            log.exception("%s log: could not cut a failed write back", self.prefix)
        log.error("%s log write failed, cut back to byte %d of %s: %r", self.prefix, self._size, self._path(), exc)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def _sync(self) -> None:
        """After a write (under ``_lock``). "always": fsync before the callers
        hear back. "batch": only mark the file dirty: the syncer thread
        fsyncs it every ``batch_seconds``, so no caller waits for the disk
        (an fsync takes 2 ms typically and 30 ms at its p99 on this VM, which
        every caller of the write that drew it, and everyone waiting for the
        engine's lock behind a joined-log append, used to wait for)."""
        if self.fsync == "always":
            os.fsync(self._fd)
        elif self.fsync == "batch":
            self._dirty = True
            if self._syncer is None:
                self._syncer = threading.Thread(target=self._sync_loop, name=f"{self.prefix}-fsync", daemon=True)
                self._syncer.start()

    def _sync_loop(self) -> None:
        while not self._closing.wait(self.batch_seconds):
            self._sync_dirty()

    def _sync_dirty(self) -> None:
        """fsync what was written since the last one, on a duplicate of the
        descriptor so that writes (and a rotation) go on meanwhile. A failure
        is the log's like a failed write's: the lines stay, ``writable`` is
        False (health NOT_SERVING) until a write or a probe succeeds."""
        with self._lock:
            if not self._dirty or self._fd < 0:
                return
            self._dirty = False
            fd = os.dup(self._fd)
        try:
            os.fsync(fd)
        except OSError as exc:
            with self._lock:
                self.failures += 1
                self.failure = exc
                self._last_probe = time.monotonic()
            log.error("%s log: fsync of %s failed: %r", self.prefix, self.directory, exc)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._index += 1
        self._fd = self._open()

    def read(self) -> Iterator[dict]:
        """Every record of every segment, in order (torn lines skipped)."""
        yield from read_log_dir(self.directory, self.prefix, self.ext)

    def close(self) -> None:
        with self._cond:
            last = self._last
        if last is not None:
            self._until_written(last)
        self._closing.set()
        if self._syncer is not None:
            self._syncer.join()
        with self._lock:
            if self._fd >= 0:
                if self.fsync != "never":
                    try:
                        os.fsync(self._fd)
                    except OSError:
                        log.exception("%s log: fsync at close failed", self.prefix)
                os.close(self._fd)
                self._fd = -1


PROBE_BYTES = 64 * 1024  # what a probe must be able to write before the log counts as writable again


def segments(directory: Path, prefix: str = "events", ext: str = "jsonl") -> list[Path]:
    found = [p for p in Path(directory).glob(f"{prefix}-*.{ext}") if _SEGMENT.match(p.name)]
    return sorted(found, key=_number)


def read_log_dir(directory: Path, prefix: str = "events", ext: str = "jsonl") -> Iterator[dict]:
    """Every record of a log directory written by another process, in order."""
    for path in segments(directory, prefix, ext):
        for _, obj in read_lines(path, strict=False):
            yield obj


WORKER_DIRS = "worker-*"  # DATA/events/worker-K: one serving worker's decision log


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


def _records(path: Path, data: bytes, start: int) -> list[tuple[dict, LineRef]]:
    """The records of ``data`` (complete lines read at byte ``start`` of ``path``)."""
    records = []
    offset = start
    for raw in data.split(b"\n")[:-1]:
        try:
            records.append((json.loads(raw), LineRef(str(path), offset, len(raw))))
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
