"""The joined log's columnar copy (Parquet): what offline evaluation reads
of each decision, one row per slot choice, without parsing a JSON line.

The DSJSON joined log stays the record (plain VW trains on it, features and
all); the columnar copy holds what the estimators and the built-in targets
need -- ids, times, slots, the served candidate ids, the logged action, its
propensity and the logged ranking, the reward, and what each slot could
show given the earlier slots -- and is ~100x faster to load. It lives next
to its log as ``<log>.columnar.parquet`` and says which log it copies (size
and modification time in the file's metadata): a copy that does not match
its log is ignored (and rewritten by the replay that reads the log).

Rows come in log order, an event's choices together (``choice`` 0, 1, ...).
One home for the schema: :data:`SCHEMA`, :func:`table_from_events` (from
joined events) and, for ``placement import``, :func:`table_from_columns`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import orjson

from bandit.features import context_spaces, slot_tokens, tokens
from bandit.logformat.events import JoinedEvent

FORMAT_VERSION = "3"  # 2: pdrop; 3: the reward model's features
SUFFIX = ".columnar.parquet"
SEPARATOR = "|"  # collection ids are names without '|' (bandit.features.check_name)
SCHEMA = pa.schema([
    ("event_id", pa.string()),
    ("timestamp", pa.float64()),
    ("choice", pa.int16()),  # the choice's place in its event (slot order as logged)
    ("slot_id", pa.string()),
    ("default_collection", pa.string()),
    ("action", pa.int32()),  # index into the event's candidates, served order
    ("probability", pa.float64()),  # null where the log has none
    ("reward", pa.float64()),
    ("observed", pa.bool_()),  # False: no reward came, the default was applied
    ("chosen_only", pa.bool_()),  # the event logs only the chosen actions' propensities
    ("candidates", pa.string()),  # the event's candidate ids, served order, '|'-joined
    ("allowed", pa.string()),  # candidate indices this slot could show, '|'-joined
    ("ranking_action", pa.list_(pa.int32())),  # the logged ranking (null when chosen_only)
    ("ranking_prob", pa.list_(pa.float64())),
    ("pdrop", pa.float64()),  # the event's drop probability under subsampled learning (null: 0)
    # What the reward model of offline evaluation reads (bandit.features.tokens):
    # the event's context features (on its first row; null on the others),
    ("context_tokens", pa.list_(pa.string())),
    ("context_values", pa.list_(pa.float64())),
    # this choice's slot features, JSON {token: value}, and the event's
    # candidates' features, JSON [{token: value}, ...] in served order
    ("slot_tokens", pa.string()),
    ("candidate_tokens", pa.string()),
])


def copy_path(log: Path) -> Path:
    """Where the columnar copy of ``log`` lives."""
    log = Path(log)
    return log.with_name(log.name + SUFFIX)


def source_stamp(log: Path) -> dict[str, str]:
    """What identifies the log a copy was made from (size and mtime)."""
    st = Path(log).stat()
    return {"source_size": str(st.st_size), "source_mtime_ns": str(st.st_mtime_ns)}


def choice_walk(joined: JoinedEvent) -> list[list[int]]:
    """What each choice of a decision could show: the slot walk of
    :class:`bandit.decision.DecisionInput` given the logged earlier slots, plus
    the logged action itself (the logger could choose it, so it was available)."""
    d = joined.decision
    out = []
    for (_, allowed), choice in zip(d.inp.walk([c.action for c in d.choices]), d.choices):
        if choice.action not in allowed:
            allowed.append(choice.action)
        out.append(allowed)
    return out


def features_json(value: Any) -> str:
    """Slot or candidate features as the copy holds them: JSON, keys sorted
    (so equal features are equal strings, whoever wrote them)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def candidates_json(candidates: Sequence[Any]) -> str:
    """The ``candidate_tokens`` cell of an event with these candidates."""
    return features_json([tokens(c.spaces()) for c in candidates])


def table_from_events(events: Iterable[JoinedEvent]) -> pa.Table:
    """The rows of joined events, in their order."""
    cols: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for joined in events:
        slots = choice_walk(joined)
        d = joined.decision
        ids = SEPARATOR.join(c.id for c in d.inp.candidates)
        defaults = {s.id: s.default_collection for s in d.inp.slots}
        context = tokens(context_spaces(d.inp.context))
        cand_json = candidates_json(d.inp.candidates)
        for j, (choice, avail) in enumerate(zip(d.choices, slots)):
            p = choice.probability
            known = not d.chosen_only
            row = (d.event_id, d.timestamp, j, choice.slot_id, defaults.get(choice.slot_id, ""), choice.action,
                   None if p is None or (isinstance(p, float) and math.isnan(p)) else p, joined.rewards[j],
                   joined.observed[j], d.chosen_only, ids, SEPARATOR.join(map(str, avail)),
                   [a for a, _ in choice.ranking] if known else None,
                   [q for _, q in choice.ranking] if known else None, joined.pdrop or None,
                   list(context) if j == 0 else None, list(context.values()) if j == 0 else None,
                   features_json(slot_tokens(d.inp.slots[j] if j < len(d.inp.slots) else None,
                                             choice.slot_id, j)), cand_json)
            for name, value in zip(SCHEMA.names, row):
                cols[name].append(value)
    return pa.table(cols, schema=SCHEMA)


def table_from_columns(**columns: Any) -> pa.Table:
    """A table from whole columns (arrays or scalars to repeat), in the schema."""
    n = max(len(v) for v in columns.values() if isinstance(v, (pa.Array, np.ndarray, list)))
    arrays = []
    for field in SCHEMA:
        value = columns.get(field.name)
        if isinstance(value, (pa.Array, pa.ChunkedArray)):
            arrays.append(value.cast(field.type))
        elif isinstance(value, (np.ndarray, list)):
            arrays.append(pa.array(value, field.type))
        else:
            arrays.append(pa.nulls(n, field.type) if value is None else pa.array([value] * n, field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


class Writer:
    """Appends tables to a columnar copy; the file appears atomically on
    :meth:`close`, stamped with the log it copies (known only once that log
    is complete, when the copy is written alongside it)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".writing")
        self._writer = pq.ParquetWriter(self.tmp, SCHEMA, compression="zstd")

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table.cast(SCHEMA))

    def close(self, stamp: dict[str, str] | None, skipped: Sequence[int] = ()) -> None:
        """Finish the file as the copy of the log ``stamp`` describes; with no
        stamp (nothing was written) the file is dropped."""
        if stamp is not None:
            self._writer.add_key_value_metadata({"placement_columnar": FORMAT_VERSION, **stamp,
                                                 "skipped_lines": json.dumps(list(skipped))})
        self._writer.close()
        if stamp is not None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_copy(log: Path, table: pa.Table, skipped: Sequence[int] = ()) -> Path:
    """Write ``table`` as the columnar copy of ``log`` (stamped with it)."""
    writer = Writer(copy_path(log))
    writer.write(table)
    writer.close(source_stamp(log), skipped)
    return writer.path


def _metadata(path: Path) -> dict[bytes, bytes]:
    return pq.ParquetFile(path).metadata.metadata or {}


def current_copy(log: Path) -> Path | None:
    """The columnar copy of ``log`` if there is one made from it as it is now."""
    path = copy_path(log)
    if not path.is_file():
        return None
    try:
        meta = _metadata(path)
    except (OSError, pa.ArrowInvalid):
        return None
    if meta.get(b"placement_columnar") != FORMAT_VERSION.encode():
        return None
    if any(meta.get(k.encode()) != v.encode() for k, v in source_stamp(log).items()):
        return None
    return path


REPEATED = ("slot_id", "default_collection", "candidates", "allowed", "slot_tokens", "candidate_tokens")  # few distinct values: dictionary-encoded


def encoded(table: pa.Table) -> pa.Table:
    """``table`` with those of the :data:`REPEATED` columns it has
    dictionary-encoded (as :func:`read_copy` reads them)."""
    import pyarrow.compute as pc
    for name in REPEATED:
        i = table.schema.get_field_index(name)
        if i >= 0 and not pa.types.is_dictionary(table.schema.field(i).type):
            table = table.set_column(i, name, pc.dictionary_encode(table[name]))
    return table


FEATURES = ("context_tokens", "context_values", "slot_tokens", "candidate_tokens")  # the reward model's
_DICTIONARY = [*REPEATED, "context_tokens.list.element"]  # read dictionary-encoded


def read_copy(path: Path, features: bool = True) -> tuple[pa.Table, list[int]]:
    """The rows of a columnar copy (repeated strings dictionary-encoded) and
    the torn line numbers its log had; without the :data:`FEATURES` columns
    unless ``features`` (they are most of the memory, and only the reward
    model reads them: :func:`read_features`)."""
    table = _read(path, [n for n in SCHEMA.names if features or n not in FEATURES])
    return table, list(json.loads(_metadata(path).get(b"skipped_lines", b"[]")))


def read_features(path: Path) -> pa.Table:
    """``event_id`` and the :data:`FEATURES` columns of a columnar copy."""
    return _read(path, ["event_id", *FEATURES])


def _read(path: Path, names: Sequence[str]) -> pa.Table:
    """These columns of a copy, the repeated strings dictionary-encoded."""
    table = pq.read_table(path, columns=list(names),
                          read_dictionary=[c for c in _DICTIONARY if c.split(".")[0] in names])
    return table.replace_schema_metadata(None)
