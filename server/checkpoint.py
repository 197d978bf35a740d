"""The engine's restart checkpoint: ``DATA/checkpoint.json``.

A restart used to read every log from its start, so it grew with all history
ever written. The checkpoint says where reading can resume instead: how far
each event log (the engine's own and every serving worker's) had been read,
where in each joined log a published model's ``joined_through`` lies, and the
state of every decision still pending (where its line is, its rewards and
activation) plus the ids closed lately. A restart reads the checkpoint and only
the logs' tails after it: it is bounded by what is pending, not by history.

Written atomically (a temporary file, fsynced, renamed over the old one), so a
crash leaves the previous checkpoint or the new one, never half of one. One
that is missing, unreadable or of another format is ignored (logged): the
engine then reads everything, as it always could.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator

import orjson

from bandit.logformat.events import dumps
from server.eventlog import private_opener

log = logging.getLogger(__name__)

FILE_NAME = "checkpoint.json"
FORMAT = 2  # 2: the joiner's pending decisions as columns (1: an object each, still read)
READABLE = (1, 2)
CHUNK = 10_000  # list items encoded per call: each call holds the GIL
WRITE_BYTES = 1 << 20  # encoded between two writes (and pauses)
KEYS = ("format", "events", "joined", "joiner")


def write_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Replace ``path`` with ``checkpoint`` (readers see the old or the new one).

    Encoded with the log's encoder (orjson) in pieces of at most
    :data:`CHUNK` list items, written a MiB at a time: one encoder call
    holds the GIL throughout (json.dumps of 8,000 pending decisions held it
    ~30 ms, orjson of 200,000 ~100 ms), every decide needs it, and each
    write gives it up."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb", opener=private_opener) as fh:
        buffered = bytearray()
        for piece in _encoded({"format": FORMAT, **checkpoint}):
            buffered += piece
            if len(buffered) >= WRITE_BYTES:  # one write a MiB: each waits for the GIL back
                fh.write(buffered)
                buffered.clear()
        fh.write(buffered)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power loss
    finally:
        os.close(directory)


def _encoded(value: Any) -> Iterator[bytes]:
    """``value`` as JSON in pieces: dicts key by key, long lists by chunks."""
    if isinstance(value, dict) and value:
        sep = b"{"
        for key, item in value.items():
            yield sep + dumps(str(key)).encode("utf-8") + b":"
            yield from _encoded(item)
            sep = b","
        yield b"}"
    elif isinstance(value, list) and len(value) > CHUNK:
        for start in range(0, len(value), CHUNK):
            yield (b"[" if start == 0 else b",") + dumps(value[start:start + CHUNK]).encode("utf-8")[1:-1]
        yield b"]"
    else:
        yield dumps(value).encode("utf-8")


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint, or None (then recovery reads every log from its start)."""
    try:
        checkpoint = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("checkpoint %s unreadable (%s): reading the logs from their start", path, exc)
        return None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") not in READABLE or \
            any(key not in checkpoint for key in KEYS):
        log.warning("checkpoint %s is not a checkpoint of a known format: reading the logs from their start", path)
        return None
    return checkpoint
