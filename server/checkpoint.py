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

import json
import logging
import os
from pathlib import Path
from typing import Any

from bandit.logformat.events import dumps
from server.eventlog import private_opener

log = logging.getLogger(__name__)

FILE_NAME = "checkpoint.json"
FORMAT = 1
KEYS = ("format", "events", "joined", "joiner")


def write_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Replace ``path`` with ``checkpoint`` (readers see the old or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    # The log's encoder (orjson): one C call holds the GIL throughout, and
    # json.dumps of 8,000 pending decisions held it for ~30 ms of every decide.
    data = dumps({"format": FORMAT, **checkpoint}).encode("utf-8")
    with open(tmp, "wb", opener=private_opener) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power loss
    finally:
        os.close(directory)


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint, or None (then recovery reads every log from its start)."""
    try:
        checkpoint = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("checkpoint %s unreadable (%s): reading the logs from their start", path, exc)
        return None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT or \
            any(key not in checkpoint for key in KEYS):
        log.warning("checkpoint %s is not a format-%d checkpoint: reading the logs from their start", path, FORMAT)
        return None
    return checkpoint
