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

    def segments(self) -> list[Path]:
        return segments(self.directory, self.prefix, self.ext)

    def _open(self):
        path = self.directory / f"{self.prefix}-{self._index:06d}.{self.ext}"
        fh = open(path, "ab", opener=private_opener)
        if fh.tell() > 0 and not _ends_with_newline(path):
            fh.write(b"\n")  # seal a torn line left by a crash; readers skip it
        return fh

    def append(self, line: str) -> None:
        self.append_many((line,))

    def append_many(self, lines: Iterable[str]) -> None:
        data = "".join(f"{line}\n" for line in lines).encode("utf-8")
        if data:
            self._write(data)

    def submit(self, line: str) -> int:
        """Queue a line for the writer thread; returns its ticket for :meth:`wait`.
        Lines are written in submission order."""
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
                self._write(b"".join(batch))
            except BaseException as exc:  # disk full, I/O error: waiters get the error
                log.exception("event log write failed")
                with self._cond:
                    self._failure = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._written = last
                self._cond.notify_all()

    def _write(self, data: bytes) -> None:
        with self._lock:
            self._fh.write(data)
            self._fh.flush()
            self._sync()
            if self._fh.tell() >= self.segment_bytes:
                self._rotate()

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


class Tailer:
    """Follows the log directories under ``root`` matching ``pattern`` that
    other processes (possibly on other hosts, over shared storage) append to.
    Directories that appear later are followed from their start; only complete
    lines are returned (a line being written is left for the next call)."""

    def __init__(self, root: Path, pattern: str, prefix: str = "events", ext: str = "jsonl"):
        self.root, self.pattern = Path(root), pattern
        self.prefix, self.ext = prefix, ext
        self._pos: dict[Path, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def directories(self) -> list[Path]:
        return sorted(p for p in self.root.glob(self.pattern) if p.is_dir())

    def skip_existing(self) -> None:
        """Start from the current ends (what recovery has already read)."""
        for directory in self.directories():
            found = segments(directory, self.prefix, self.ext)
            self._pos[directory] = (_number(found[-1]), found[-1].stat().st_size) if found else (0, 0)

    def poll(self) -> list[tuple[dict, LineRef]]:
        """New records with where their lines are, oldest first per directory."""
        with self._lock:
            out: list[tuple[dict, LineRef]] = []
            for directory in self.directories():
                index, offset = self._pos.get(directory, (0, 0))
                for path in segments(directory, self.prefix, self.ext):
                    number = _number(path)
                    if number < index:
                        continue
                    start = offset if number == index else 0
                    with open(path, "rb") as fh:
                        fh.seek(start)
                        data = fh.read()
                    complete = data[: data.rfind(b"\n") + 1]
                    out += _records(path, complete, start)
                    index, offset = number, start + len(complete)
                self._pos[directory] = (index, offset)
            return out


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
