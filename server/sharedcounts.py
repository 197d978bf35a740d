"""Counters a serving worker shares with its coordinator.

A worker rejects bad requests itself (validation happens where the request
arrives), but ``GetStats`` is answered by the coordinator. Each worker keeps
its counters in a small file in its own log directory, memory-mapped: an
increment is a store into shared pages, no system call and no RPC, and a
coordinator on the same host reads the new value at once. A worker on another
host flushes the pages to the shared data directory when it refreshes (see
``flush``), so its counts arrive within that period.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator, MutableMapping
from pathlib import Path

SHARED = ("bad_requests", "pending_refused", "explain_ablations", "explains_truncated")
FILE_NAME = "counts.bin"
_CELL = struct.Struct("<q")


class SharedCounts(MutableMapping[str, int]):
    """Named 64-bit counters in a memory-mapped file; a fresh process counts from zero."""

    def __init__(self, path: Path, names: tuple[str, ...] = SHARED):
        self.path, self.names = Path(path), names
        self._index = {name: i * _CELL.size for i, name in enumerate(names)}
        size = _CELL.size * len(names)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, bytes(size), 0)  # zeroed in place: never shrunk under a reader's mapping
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def __getitem__(self, name: str) -> int:
        return _CELL.unpack_from(self._map, self._index[name])[0]

    def __setitem__(self, name: str, value: int) -> None:
        _CELL.pack_into(self._map, self._index[name], value)

    def __delitem__(self, name: str) -> None:
        raise TypeError("shared counters cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def flush(self) -> None:
        """Write the pages back (for a coordinator reading over shared storage)."""
        self._map.flush()

    def close(self) -> None:
        self._map.close()


def read_counts(path: Path, names: tuple[str, ...] = SHARED) -> dict[str, int]:
    """A worker's counters as they are now; zeros for a missing or short file."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        data = b""
    return {name: _CELL.unpack_from(data, i * _CELL.size)[0] if len(data) >= (i + 1) * _CELL.size else 0
            for i, name in enumerate(names)}


def reset_counts(path: Path, names: tuple[str, ...] = SHARED) -> None:
    """Zero a counters file in place (a coordinator starting counts from zero,
    as its own counters do), without shrinking it under a worker's mapping."""
    if Path(path).exists():
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(_CELL.size * len(names)), 0)
        finally:
            os.close(fd)
