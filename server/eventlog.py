"""Durable, append-only line logs (the event log and the joined log).

Durability rule: ``append`` returns only after the line is written to the
operating system (so a killed server loses nothing it acknowledged). With
``fsync="always"`` it also waits for the disk (survives power loss); with
``"batch"`` the file is fsynced at most every ``batch_seconds`` by the writer;
``"never"`` leaves that to the OS. Files rotate into numbered segments.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from bandit.events import read_lines

_SEGMENT = re.compile(r"^(?P<prefix>.+)-(?P<n>\d{6})\.(?P<ext>\w+)$")


class AppendLog:
    def __init__(self, directory: Path, prefix: str, ext: str = "jsonl", fsync: str = "batch",
                 segment_bytes: int = 256 * 1024 * 1024, batch_seconds: float = 0.05):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix, self.ext = prefix, ext
        self.fsync, self.segment_bytes, self.batch_seconds = fsync, segment_bytes, batch_seconds
        self._lock = threading.Lock()
        segments = self.segments()
        self._index = _number(segments[-1]) if segments else 1
        self._fh = self._open()
        self._last_sync = time.monotonic()
        self.lines_written = 0

    def segments(self) -> list[Path]:
        found = [p for p in self.directory.glob(f"{self.prefix}-*.{self.ext}") if _SEGMENT.match(p.name)]
        return sorted(found, key=_number)

    def _open(self):
        path = self.directory / f"{self.prefix}-{self._index:06d}.{self.ext}"
        fh = open(path, "ab")
        if fh.tell() > 0 and not _ends_with_newline(path):
            fh.write(b"\n")  # seal a torn line left by a crash; readers skip it
        return fh

    def append(self, line: str) -> None:
        self.append_many((line,))

    def append_many(self, lines: Iterable[str]) -> None:
        data = "".join(f"{line}\n" for line in lines).encode("utf-8")
        if not data:
            return
        with self._lock:
            self._fh.write(data)
            self._fh.flush()
            self._sync()
            self.lines_written += data.count(b"\n")
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
        for path in self.segments():
            for _, obj in read_lines(path, strict=False):
                yield obj

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                if self.fsync != "never":
                    os.fsync(self._fh.fileno())
                self._fh.close()


def _number(path: Path) -> int:
    match = _SEGMENT.match(path.name)
    return int(match["n"]) if match else 0


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
