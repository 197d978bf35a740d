"""Import tabular logged bandit data (CSV or Parquet) into the joined log.

Logs from other systems usually come as one row per shown item: context
columns, the chosen collection, its propensity, the reward, a timestamp, and
optionally an event id, a slot/position and the set of collections that were
available. This module turns such a file into the engine's joined DSJSON (ccb
layout, via :func:`bandit.logformat.events.joined_to_dsjson`), one line per decision, so
plain VW, ``read_joined`` and the offline evaluators all read it as they read
the server's own joined log.

Conventions (also shown by ``placement import --help``):

* **Rows** are numbered from 1 for the first data row (CSV line N+1 with a
  header line). Every row is either written or rejected with its number and a
  reason; nothing is dropped silently.
* **Decisions.** Without an event-id column each row is its own decision with
  the id ``row-<N>``. With one, rows sharing an event id form one decision;
  with a slot column too, a multi-slot decision whose slots are sorted
  numerically when all slot values are integers, else kept in file order. A
  decision with any bad row is rejected whole; its other rows are reported as
  such. Rows of one decision need not be adjacent, but an event whose rows are
  spread apart stays in memory until its last row is read.
* **Logged ranking.** Tabular logs rarely carry the logging policy's full
  distribution. Unless a distribution column is mapped, the logged ranking is
  the chosen collection with its propensity alone and the decision is marked
  ``chosen_only`` (``"_p_chosen_only": true`` in the DSJSON, which VW
  ignores): nothing is invented for the other collections. Estimators that
  only use the chosen action's propensity (IPS, SNIPS, DR of any other
  target) are unaffected; what needs the logging policy's whole distribution
  (DM and the DR family for the ``logged`` target) is refused on such logs.
* **Candidates.** The candidate-set column (``"a|b|c"``) lists what a row could
  have shown; rows of one decision with different sets give per-slot include
  lists. Without the column every decision offers every collection seen in
  the action column of the file (sorted), except a single-choice decision
  (one row) with a slot/position column: it offers the collections seen at
  its position anywhere in the file (sorted), so each position keeps its own
  candidate set and "uniform" means uniform over that position's candidates.
* **Positions.** Single-choice rows with a slot/position column (and no event
  column, or one row per event) stay one decision each, at their slot; the
  replay values each position on its own rows and the page as the sum of the
  position values.
* **Features.** Each context column becomes a feature in a named group (VW
  namespace ``C.<group>``). A column is numeric when all its non-empty values
  are numbers, else categorical, unless ``:num``/``:cat`` says otherwise. An
  empty cell means the feature is absent for that row (VW's sparse "missing").
  Rows of one decision must agree on their context.
* **Timestamps** are ISO-8601 strings (naive ones are UTC), epoch seconds, or
  Parquet timestamps. Without a timestamp column decisions get epoch 0.
* **Speed.** One row per decision (no candidate or distribution column,
  event ids unique if any) is converted a column at a time with Arrow, any
  row with a cell the column code cannot vouch for through the row-level
  code: the same bytes and messages (tests compare), ~100x faster.
  The log's columnar copy (:mod:`bandit.logformat.columnar`) is written
  next to it.
* **Memory.** The file is read twice in chunks: a first pass over the action,
  event-id and type-inferred context columns (collection set, rows per event,
  column types), then the conversion pass. Only the per-event row counts and
  unfinished decisions are held in memory.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import tomllib
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TextIO

import numpy as np

from bandit.features import (
    DEFAULT_LIMITS,
    FLOAT32_MAX,
    Candidate,
    FeatureError,
    FeatureGroup,
    SlotSpec,
    check_groups,
    check_name,
    context_spaces,
    slot_tokens,
    tokens,
)
from bandit.decision import DecisionInput, SlotChoice
from bandit.joiner import REWARD_RANGE, RewardOutOfRange, check_reward_value
from bandit.logformat.events import EPOCH_RANGE, DecisionEvent, JoinedEvent, dumps, joined_to_dsjson

DEFAULT_GROUP = "context"
DEFAULT_SLOT = "slot_0"
MODEL_VERSION = "imported"
PROBABILITY_TOLERANCE = 1e-3  # how far a logged distribution's sum may be from 1
Progress = Callable[[int, int], None]


class MappingError(ValueError):
    """The input cannot be used at all (missing file or column, bad mapping)."""


class _RowError(Exception):
    """One row is bad; ``kind`` is a stable short code, the message says why."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# --- the mapping -------------------------------------------------------------

@dataclass(frozen=True)
class ContextColumn:
    """One context column: which group it goes in, its feature name and kind."""

    column: str
    group: str = DEFAULT_GROUP
    feature: str = ""
    kind: str = "auto"  # auto | num | cat

    @property
    def name(self) -> str:
        return self.feature or self.column


@dataclass(frozen=True)
class ColumnMap:
    """Which columns mean what. ``propensity`` may be omitted when a full
    ``distribution`` column (``"a:0.7|b:0.3"``) is mapped."""

    action: str = ""
    reward: str = ""
    propensity: str = ""
    context: tuple[ContextColumn, ...] = ()
    slot: str = ""
    event: str = ""
    timestamp: str = ""
    candidates: str = ""
    distribution: str = ""
    separator: str = "|"
    reward_is_cost: bool = False
    default_slot: str = DEFAULT_SLOT
    surface: str = "default"
    collection_features: Path | None = None
    collection_id_column: str = "id"
    collection_group: str = "collection"

    def columns(self) -> list[str]:
        """Every input column the mapping reads, in a stable order."""
        named = [self.action, self.reward, self.propensity, self.slot, self.event,
                 self.timestamp, self.candidates, self.distribution]
        named += [c.column for c in self.context]
        return list(dict.fromkeys(c for c in named if c))

    def validate(self) -> "ColumnMap":
        for role in ("action", "reward"):
            if not getattr(self, role):
                raise MappingError(f"no {role} column mapped (--{role} or '{role}' in the mapping file)")
        if not self.propensity and not self.distribution:
            raise MappingError("no propensity column mapped (--propensity, or --distribution for a full one)")
        if not self.separator:
            raise MappingError("candidate separator is empty")
        try:
            check_name("default slot", self.default_slot)
            seen: set[tuple[str, str]] = set()
            for col in self.context:
                check_name("context group", col.group)
                check_name(f"feature for column '{col.column}' (set 'feature' in the mapping file)", col.name)
                if (col.group, col.name) in seen:
                    raise MappingError(f"feature '{col.group}:{col.name}' is mapped twice")
                seen.add((col.group, col.name))
            per_group = Counter(c.group for c in self.context)
            for group, n in per_group.items():
                if n > DEFAULT_LIMITS.max_features_per_group:
                    raise MappingError(f"group '{group}' has {n} features, at most "
                                       f"{DEFAULT_LIMITS.max_features_per_group}")
            if len(per_group) > DEFAULT_LIMITS.max_groups:
                raise MappingError(f"{len(per_group)} context groups, at most {DEFAULT_LIMITS.max_groups}")
        except FeatureError as exc:
            raise MappingError(str(exc)) from None
        return self


def parse_context_spec(text: str) -> tuple[ContextColumn, ...]:
    """``"user:age,user:segment:cat,hour"`` -> context columns; a bare column
    goes into group ``context``; a trailing ``:num``/``:cat`` fixes the kind."""
    return tuple(_context_item(item.strip()) for item in text.split(",") if item.strip())


def _context_item(item: str) -> ContextColumn:
    parts = item.split(":")
    kind = "auto"
    if len(parts) > 1 and parts[-1] in ("num", "cat", "auto"):
        kind = parts.pop()
    if len(parts) == 1:
        return ContextColumn(parts[0], kind=kind)
    if len(parts) == 2 and all(parts):
        return ContextColumn(parts[1], group=parts[0], kind=kind)
    raise MappingError(f"context column '{item}': expected [group:]column[:num|:cat]")


_KEYS = {f.name for f in fields(ColumnMap)}


def build_mapping(mapping_file: Path | None = None, **overrides: Any) -> ColumnMap:
    """The mapping file (TOML, optional) with command-line values on top;
    ``None``/empty overrides leave the file's value. Context may be a spec
    string, a list of spec strings, or a list of tables
    ``{column, group, feature, kind}``."""
    raw: dict[str, Any] = _read_toml(mapping_file) if mapping_file else {}
    for key, value in overrides.items():
        if value not in (None, "", False, ()):
            raw[key] = value
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise MappingError(f"unknown mapping key(s): {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    raw["context"] = _context_from(raw.get("context", ()))
    if raw.get("collection_features"):
        path = Path(raw["collection_features"])
        if mapping_file and not path.is_absolute() and not overrides.get("collection_features"):
            path = mapping_file.parent / path
        raw["collection_features"] = path
    try:
        return ColumnMap(**raw).validate()
    except TypeError as exc:
        raise MappingError(f"bad mapping: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise MappingError(f"mapping file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"mapping file {path}: {exc}") from None
    return data.get("import", data)  # allow an [import] table in a larger config


def _context_from(raw: Any) -> tuple[ContextColumn, ...]:
    if isinstance(raw, str):
        return parse_context_spec(raw)
    out: list[ContextColumn] = []
    for item in raw or ():
        if isinstance(item, str):
            out.extend(parse_context_spec(item))
        elif isinstance(item, Mapping) and "column" in item:
            try:
                out.append(ContextColumn(**item))
            except TypeError as exc:
                raise MappingError(f"context entry {dict(item)}: {exc}") from None
        elif isinstance(item, ContextColumn):
            out.append(item)
        else:
            raise MappingError(f"context entry {item!r}: expected a spec string or a table with 'column'")
    for col in out:
        if col.kind not in ("auto", "num", "cat"):
            raise MappingError(f"context column '{col.column}': kind '{col.kind}' is not auto, num or cat")
    return tuple(out)


# --- reading tabular files ---------------------------------------------------

def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    if path.suffix.lower() in (".csv", ".tsv", ".txt", ".gz"):
        return False
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


def _csv_separator(path: Path) -> str:
    return "\t" if ".tsv" in path.suffixes else ","


def table_columns(path: Path) -> list[str]:
    """The file's column names; MappingError if it is missing or unreadable."""
    if not path.is_file():
        raise MappingError(f"input file {path} does not exist")
    try:
        if _is_parquet(path):
            import pyarrow.parquet as pq
            return list(pq.read_schema(path).names)
        import pandas as pd
        return [str(c) for c in pd.read_csv(path, nrows=0, sep=_csv_separator(path), encoding="utf-8-sig").columns]
    except MappingError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many kinds
        raise MappingError(f"cannot read {path}: {exc}") from None


def iter_rows(path: Path, columns: Sequence[str], chunk_rows: int = 50_000) -> Iterator[dict[str, Any]]:
    """Rows as dicts, chunk by chunk. CSV cells are strings (types are decided
    here, not by pandas per chunk); empty cells and Parquet nulls are None."""
    if _is_parquet(path):
        import pyarrow.parquet as pq
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=list(columns)):
            yield from batch.to_pylist()
        return
    import pandas as pd
    reader = pd.read_csv(path, usecols=list(columns), dtype=str, keep_default_na=False, na_filter=False,
                         chunksize=chunk_rows, sep=_csv_separator(path), encoding="utf-8-sig")
    try:
        for chunk in reader:
            names = list(chunk.columns)
            cells = [[v if isinstance(v, str) and v.strip() else None for v in chunk[c].tolist()] for c in names]
            for values in zip(*cells):
                yield dict(zip(names, values))
    except pd.errors.ParserError as exc:
        raise MappingError(f"{path} is not well-formed CSV: {exc}") from None


# --- cell parsing ------------------------------------------------------------

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_id(value: Any) -> str | None:
    """Ids from any column type: integral floats (pandas' ints with gaps) as ints."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _float(value: Any, what: str, kind: str) -> float:
    if value is None:
        raise _RowError(kind, f"missing {what}")
    if _is_number(value):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        raise _RowError(kind, f"{what} {str(value)[:40]!r} is not a number") from None


def parse_propensity(value: Any) -> float:
    p = _float(value, "propensity", "propensity")
    if math.isnan(p):
        raise _RowError("propensity", "propensity is NaN")
    if not 0.0 < p <= 1.0:
        raise _RowError("propensity", f"propensity {p:g} is not in (0, 1]")
    return p


def parse_reward(value: Any, is_cost: bool = False) -> float:
    if isinstance(value, bool):
        r = float(value)
    elif isinstance(value, str) and value.strip().lower() in ("true", "false"):
        r = float(value.strip().lower() == "true")
    else:
        r = _float(value, "reward", "reward")
    if not math.isfinite(r):
        raise _RowError("reward", f"reward {r:g} is not finite")
    try:
        return check_reward_value(-r if is_cost else r)
    except RewardOutOfRange as exc:
        raise _RowError("reward", str(exc)) from None


def parse_timestamp(value: Any) -> float:
    """Epoch seconds from epoch numbers, ISO strings (naive = UTC) or datetimes."""
    if value is None:
        raise _RowError("timestamp", "missing timestamp")
    if isinstance(value, datetime):
        return _aware(value).timestamp()
    if _is_number(value):
        ts = float(value)
    else:
        text = str(value).strip()
        try:
            ts = float(text)
        except ValueError:
            try:
                return _aware(datetime.fromisoformat(text.replace("Z", "+00:00"))).timestamp()
            except ValueError:
                raise _RowError("timestamp", f"bad timestamp {text[:40]!r} (expected ISO-8601 or epoch seconds)") from None
    if not math.isfinite(ts):
        raise _RowError("timestamp", f"bad timestamp {ts:g}")
    if not EPOCH_RANGE[0] < ts < EPOCH_RANGE[1]:  # the log writes it as an ISO date
        raise _RowError("timestamp", f"timestamp {ts:g} is outside years 1-9999")
    return ts


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def parse_slot(value: Any) -> str:
    slot = _as_id(value)
    if slot is None:
        raise _RowError("slot", "missing slot")
    try:
        return check_name("slot", slot)
    except FeatureError:
        raise _RowError("slot", f"unknown slot format {slot[:40]!r} (expected an integer position or a name "
                                "of letters, digits, '_', '.', '-')") from None


def parse_collection(value: Any, what: str = "action") -> str:
    cid = _as_id(value)
    if cid is None:
        raise _RowError(what, f"missing {what}")
    try:
        return check_name("collection id", cid)
    except FeatureError as exc:
        raise _RowError(what, f"{what}: {exc}") from None


def parse_candidates(value: Any, separator: str) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else (str(value).split(separator) if value is not None else [])
    ids = [i for i in (_as_id(v) for v in items) if i is not None]
    if not ids:
        raise _RowError("candidates", "missing candidate set")
    return tuple(dict.fromkeys(parse_collection(i, "candidate") for i in ids))


def parse_distribution(value: Any, separator: str) -> tuple[tuple[str, float], ...]:
    """``"a:0.7|b:0.3"`` -> ((a, 0.7), (b, 0.3)), checked to be a distribution."""
    if value is None:
        raise _RowError("distribution", "missing distribution")
    out: dict[str, float] = {}
    for part in str(value).split(separator):
        cid, colon, prob = part.strip().rpartition(":")
        if not colon or not cid:
            raise _RowError("distribution", f"distribution entry {part[:40]!r} is not 'collection:probability'")
        p = _float(prob, f"probability of '{cid}'", "distribution")
        if not 0.0 <= p <= 1.0:
            raise _RowError("distribution", f"probability {p:g} of '{cid}' is not in [0, 1]")
        out[parse_collection(cid, "distribution collection")] = p
    total = sum(out.values())
    if abs(total - 1.0) > PROBABILITY_TOLERANCE:
        raise _RowError("distribution", f"distribution sums to {total:.6g}, not 1")
    return tuple(out.items())


def _numeric_cell(value: Any) -> bool:
    if _is_number(value):
        return True
    if isinstance(value, str):
        try:
            float(value)
            return True
        except ValueError:
            return False
    return False


def feature_value(value: Any, numeric: bool, where: str) -> float | str | None:
    """A cell as a feature value; None (absent) for an empty cell."""
    if value is None or isinstance(value, str) and not value.strip():
        return None
    if not numeric:
        return str(value).strip() if not isinstance(value, float) or not value.is_integer() else str(int(value))
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise _RowError("feature", f"bad feature value {where}={str(value)[:40]!r}: not a number") from None
    if not math.isfinite(number):
        raise _RowError("feature", f"bad feature value {where}={value!r}: not finite")
    return number


# --- the first pass ----------------------------------------------------------

@dataclass
class _Scan:
    rows: int = 0
    actions: set[str] = field(default_factory=set)
    event_rows: dict[str, int] = field(default_factory=dict)
    numeric: dict[str, bool] = field(default_factory=dict)
    slot_actions: dict[str, set[str]] = field(default_factory=dict)  # per slot/position: actions seen there


def _scan(path: Path, mapping: ColumnMap, chunk_rows: int, progress: Progress | None) -> _Scan:
    """Collection set, rows per event and the kind of each auto context column."""
    auto = [c.column for c in mapping.context if c.kind == "auto"]
    columns = list(dict.fromkeys([mapping.action, *([mapping.event] if mapping.event else []),
                                  *([mapping.slot] if mapping.slot else []), *auto]))
    scan = _Scan(numeric={c: True for c in auto})
    seen_value: set[str] = set()
    for row in iter_rows(path, columns, chunk_rows):
        scan.rows += 1
        action = _as_id(row[mapping.action])
        if action is not None and _valid_name(action):
            scan.actions.add(action)
            slot = _as_id(row[mapping.slot]) if mapping.slot else None
            if slot is not None:
                scan.slot_actions.setdefault(slot, set()).add(action)
        if mapping.event:
            event = _as_id(row[mapping.event])
            if event is not None:
                scan.event_rows[event] = scan.event_rows.get(event, 0) + 1
        for col in auto:
            value = row[col]
            if value is not None:
                seen_value.add(col)
                if scan.numeric[col] and not _numeric_cell(value):
                    scan.numeric[col] = False
        if progress and scan.rows % 10_000 == 0:
            progress(scan.rows, 0)
    for col in auto:
        scan.numeric[col] = scan.numeric[col] and col in seen_value
    return scan


def _valid_name(text: str) -> bool:
    try:
        check_name("id", text)
        return True
    except FeatureError:
        return False


# --- collection features -----------------------------------------------------

def load_collection_features(path: Path, id_column: str = "id", group: str = "collection") -> dict[str, Candidate]:
    """Per-collection features from a small CSV/Parquet file: one row per
    collection, every other column a feature (kind inferred per column)."""
    columns = table_columns(path)
    if id_column not in columns:
        raise MappingError(f"collection feature file {path} has no column '{id_column}' "
                           f"(columns: {', '.join(columns)})")
    rows = list(iter_rows(path, columns))
    feats = [c for c in columns if c != id_column]
    numeric = {c: all(_numeric_cell(r[c]) for r in rows if r[c] is not None) for c in feats}
    out: dict[str, Candidate] = {}
    for n, row in enumerate(rows, start=1):
        try:
            cid = parse_collection(row[id_column], "collection id")
            values = {c: feature_value(row[c], numeric[c], c) for c in feats}
            groups = (FeatureGroup(group, {k: v for k, v in values.items() if v is not None}),)
            out[cid] = Candidate(cid, check_groups(groups, f"collection '{cid}'"))
        except (_RowError, FeatureError) as exc:
            raise MappingError(f"{path} row {n}: {exc}") from None
    return out


# --- the second pass: rows into decisions ------------------------------------

@dataclass(frozen=True)
class _Row:
    number: int
    event: str
    slot: str = ""
    action: str = ""
    propensity: float = 0.0
    reward: float = 0.0
    timestamp: float = 0.0
    context: tuple[FeatureGroup, ...] = ()
    candidates: tuple[str, ...] | None = None
    distribution: tuple[tuple[str, float], ...] | None = None
    error: _RowError | None = None


@dataclass(frozen=True)
class Reject:
    row: int
    event: str
    kind: str
    reason: str


@dataclass
class ImportSummary:
    """What an import did; ``rejects`` keeps the first ``sample`` rejections."""

    rows_read: int = 0
    rows_written: int = 0
    decisions_written: int = 0
    rows_rejected: int = 0
    decisions_rejected: int = 0
    by_kind: Counter = field(default_factory=Counter)
    rejects: list[Reject] = field(default_factory=list)
    output: Path | None = None
    rows_vectorised: int = 0  # written by the column-at-a-time path (the rest row by row)


class _Converter:
    """Parses rows and assembles decisions; the caller feeds rows in order."""

    def __init__(self, mapping: ColumnMap, scan: _Scan, catalog: Mapping[str, Candidate]):
        self.m = mapping
        self.scan = scan
        self.catalog = catalog
        self.kinds = {c.column: (c.kind == "num" or (c.kind == "auto" and scan.numeric.get(c.column, False)))
                      for c in mapping.context}
        self.all_ids = tuple(sorted(scan.actions))
        self.all_index = {cid: i for i, cid in enumerate(self.all_ids)}
        self.all_candidates = tuple(catalog.get(cid) or Candidate(cid) for cid in self.all_ids)
        self.slot_ids = {slot: tuple(sorted(ids)) for slot, ids in scan.slot_actions.items()}
        self.pending: dict[str, list[_Row]] = {}

    def feed(self, number: int, raw: Mapping[str, Any]) -> Iterator[list[_Row]]:
        """Yields the rows of each decision this row completes."""
        row = self.parse(number, raw)
        if not self.m.event or row.error and row.error.kind == "event":
            yield [row]
            return
        rows = self.pending.setdefault(row.event, [])
        rows.append(row)
        if len(rows) >= self.scan.event_rows.get(row.event, 1):
            yield self.pending.pop(row.event)

    def leftovers(self) -> Iterator[list[_Row]]:
        """Events whose row count changed since the first pass (file rewritten)."""
        while self.pending:
            yield self.pending.pop(next(iter(self.pending)))

    def parse(self, number: int, raw: Mapping[str, Any]) -> _Row:
        m = self.m
        event = _as_id(raw[m.event]) if m.event else f"row-{number}"
        if event is None:
            return _Row(number, "", error=_RowError("event", "missing event id"))
        try:
            candidates = parse_candidates(raw[m.candidates], m.separator) if m.candidates else None
            action = parse_collection(raw[m.action])
            distribution = parse_distribution(raw[m.distribution], m.separator) if m.distribution else None
            propensity = self._propensity(raw, action, distribution)
            allowed = candidates if candidates is not None else self.all_ids
            if action not in allowed:
                raise _RowError("candidates", f"action '{action}' is not in the candidate set")
            for cid, _ in distribution or ():
                if cid not in allowed:
                    raise _RowError("distribution", f"distribution names '{cid}', not in the candidate set")
            return _Row(
                number, event,
                slot=parse_slot(raw[m.slot]) if m.slot else m.default_slot,
                action=action, propensity=propensity,
                reward=parse_reward(raw[m.reward], m.reward_is_cost),
                timestamp=parse_timestamp(raw[m.timestamp]) if m.timestamp else 0.0,
                context=self._context(raw, number),
                candidates=candidates, distribution=distribution)
        except _RowError as exc:
            return _Row(number, event, error=exc)

    def _propensity(self, raw: Mapping[str, Any], action: str,
                    distribution: tuple[tuple[str, float], ...] | None) -> float:
        logged = dict(distribution or ()).get(action)
        if distribution is not None and not logged:
            raise _RowError("distribution", f"distribution gives action '{action}' no probability")
        if not self.m.propensity:
            return float(logged)
        p = parse_propensity(raw[self.m.propensity])
        if logged is not None and abs(logged - p) > 1e-6:
            raise _RowError("propensity", f"propensity {p:g} disagrees with the distribution's {logged:g}")
        return p

    def _context(self, raw: Mapping[str, Any], number: int) -> tuple[FeatureGroup, ...]:
        groups: dict[str, dict[str, float | str]] = {}
        for col in self.m.context:
            value = feature_value(raw[col.column], self.kinds[col.column], col.column)
            if value is not None:
                groups.setdefault(col.group, {})[col.name] = value
        try:
            return check_groups([FeatureGroup(g, f) for g, f in groups.items()], "context")
        except FeatureError as exc:
            raise _RowError("feature", f"bad feature value: {exc}") from None

    def decision(self, rows: list[_Row]) -> tuple[JoinedEvent | None, list[Reject]]:
        """The joined event of a decision's rows, or why each row is rejected."""
        problems = {r.number: r.error for r in rows if r.error} or _decision_problems(rows, bool(self.m.slot))
        if problems:
            return None, _reject_all(rows, problems)
        rows = _slot_order(rows)
        ids, index, candidates = self._candidates(rows)
        eligible = tuple(None if r.candidates is None or len(r.candidates) == len(ids)
                         else tuple(index[c] for c in r.candidates) for r in rows)
        inp = DecisionInput(rows[0].context, tuple(SlotSpec(r.slot) for r in rows),
                            candidates,
                            eligible if any(e is not None for e in eligible) else ())
        walk = inp.walk([index[r.action] for r in rows])
        choices = [_choice(r, index, allowed) for r, (_, allowed) in zip(rows, walk)]
        event = DecisionEvent(rows[0].event, min(r.timestamp for r in rows), self.m.surface, "online",
                              MODEL_VERSION, inp, tuple(choices),
                              chosen_only=any(r.distribution is None for r in rows))
        n = len(rows)
        return JoinedEvent(event, tuple(r.reward for r in rows), (True,) * n, tuple((r.reward,) for r in rows)), []

    def _candidates(self, rows: Sequence[_Row]) -> tuple[tuple[str, ...], dict[str, int], tuple[Candidate, ...]]:
        """Ids, id -> index, and candidates: the rows' union of their candidate
        column; a single row at a position: the collections seen there; else
        the file-wide set."""
        if self.m.candidates:
            ids = tuple(dict.fromkeys(c for r in rows for c in r.candidates or ()))
        elif self.m.slot and len(rows) == 1 and rows[0].action in self.slot_ids.get(rows[0].slot, ()):
            ids = self.slot_ids[rows[0].slot]
        else:
            return self.all_ids, self.all_index, self.all_candidates
        return ids, {c: i for i, c in enumerate(ids)}, tuple(self.catalog.get(c) or Candidate(c) for c in ids)


def _decision_problems(rows: Sequence[_Row], has_slots: bool) -> dict[int, _RowError]:
    """Row-to-row inconsistencies inside one decision."""
    problems: dict[int, _RowError] = {}
    first_slot: dict[str, int] = {}
    first_action: dict[str, int] = {}
    for r in rows:
        if r.slot in first_slot:
            what = (f"duplicate (event, slot) ('{r.event}', '{r.slot}')" if has_slots
                    else f"duplicate event id '{r.event}' (no slot column mapped)")
            problems[r.number] = _RowError("duplicate", f"{what}, first at row {first_slot[r.slot]}")
        elif r.action in first_action:
            problems[r.number] = _RowError("duplicate", f"collection '{r.action}' shown in two slots of one "
                                                         f"decision, first at row {first_action[r.action]}")
        elif r.context != rows[0].context:
            problems[r.number] = _RowError("context", f"context differs from row {rows[0].number} "
                                                       "of the same decision")
        first_slot.setdefault(r.slot, r.number)
        first_action.setdefault(r.action, r.number)
    return problems


def _reject_all(rows: Sequence[_Row], problems: Mapping[int, _RowError]) -> list[Reject]:
    first = min(problems)
    whole = f"decision rejected whole: row {first} is bad ({problems[first].reason})"
    return [Reject(r.number, r.event, problems[r.number].kind, problems[r.number].reason) if r.number in problems
            else Reject(r.number, r.event, "decision", whole) for r in rows]


def _slot_order(rows: list[_Row]) -> list[_Row]:
    """Positions sort numerically; named slots keep file order."""
    if all(r.slot.isdigit() for r in rows):
        return sorted(rows, key=lambda r: int(r.slot))
    return rows


def _choice(row: _Row, index: Mapping[str, int], available: Sequence[int]) -> SlotChoice:
    """The logged ranking: the distribution if mapped, else the chosen
    collection with its propensity alone (the rest is unknown: the decision is
    marked ``chosen_only``, never given an invented distribution)."""
    chosen = index[row.action]
    if row.distribution is not None:
        ranking = [(index[c], p) for c, p in row.distribution if index[c] in available or c == row.action]
    else:
        ranking = [(chosen, row.propensity)]
    ranking.sort(key=lambda ap: (-ap[1], ap[0] != chosen, ap[0]))
    return SlotChoice(row.slot, chosen, row.propensity, tuple(ranking))


# --- the import --------------------------------------------------------------

def import_log(source: Path, out: Path, mapping: ColumnMap, *, rejects_path: Path | None = None,
               chunk_rows: int = 50_000, sample: int = 100, progress: Progress | None = None,
               vectorised: bool = True, columnar_copy: bool = True) -> ImportSummary:
    """Convert ``source`` into a joined DSJSON log at ``out`` (gzip if it ends in
    ``.gz``). The output appears atomically and only when at least one decision
    was written. MappingError when the input is unusable.

    The common mapping (one row per decision) is converted a column at a time
    (the vectorised path, ~100x the row-level speed); ``vectorised=False``
    forces the row-level path, which writes the same bytes (tests compare).
    With ``columnar_copy`` the log's columnar copy (what ``placement replay``
    loads, :mod:`bandit.logformat.columnar`) is written next to it."""
    source, out = Path(source), Path(out)
    mapping.validate()
    available = table_columns(source)
    missing = [c for c in mapping.columns() if c not in available]
    if missing:
        raise MappingError(f"column(s) not in {source.name}: {', '.join(missing)} "
                           f"(columns: {', '.join(available)})")
    catalog = (load_collection_features(mapping.collection_features, mapping.collection_id_column,
                                        mapping.collection_group) if mapping.collection_features else {})
    tmp = out.with_name(out.name + ".importing")
    try:
        summary = None
        if vectorised:
            try:
                summary = _write(tmp, rejects_path, out, columnar_copy, lambda fh, rejects, summary: _fast_import(
                    source, mapping, catalog, chunk_rows, fh, rejects, summary, sample, progress))
            except _NotVectorised:
                summary = None
        if summary is None:
            summary = _write(tmp, rejects_path, out, columnar_copy, lambda fh, rejects, summary: _row_import(
                source, mapping, catalog, chunk_rows, fh, rejects, summary, sample, progress))
        if summary.decisions_written:
            os.replace(tmp, out)  # keeps size and mtime: the copy's stamp stays true
    finally:
        tmp.unlink(missing_ok=True)
    if progress:
        progress(summary.rows_read, summary.rows_read)
    return summary


def _write(tmp: Path, rejects_path: Path | None, out: Path, copy: bool,
           body: Callable[["_Output", "_RejectWriter", ImportSummary], _Scan]) -> ImportSummary:
    """Run one conversion into fresh output, copy and rejection files."""
    summary = ImportSummary(output=out)
    writer = None
    if copy:
        from bandit.logformat import columnar
        writer = columnar.Writer(columnar.copy_path(out))
    stamp = None
    try:
        with _open_text(tmp) as fh, _RejectWriter(rejects_path) as rejects:
            output = _Output(fh, writer)
            try:
                body(output, rejects, summary)
            finally:
                output.close()
        if writer is not None and summary.decisions_written:
            from bandit.logformat import columnar
            st = tmp.stat()
            stamp = columnar.source_stamp(tmp) if st.st_size else None
    finally:
        if writer is not None:
            writer.close(stamp)
    return summary


class _Output:
    """Where written decisions go: the DSJSON lines and, if one is written,
    the columnar copy (in the same order). A line written one at a time is
    copied as :func:`bandit.logformat.events.joined_from_dsjson` reads it
    back, so the copy holds what the log says (times in milliseconds)."""

    BATCH = 10_000

    def __init__(self, fh: TextIO, copy: Any):
        self.fh, self.copy = fh, copy
        self.pending: list[str] = []
        self._writing: Any = None  # the block being written while the next one is converted
        self._pool: Any = None

    def line(self, text: str) -> None:
        self._wait()
        self.fh.write(text + "\n")
        if self.copy is not None:
            self.pending.append(text)
            if len(self.pending) >= self.BATCH:
                self.flush()

    def block(self, data: memoryview, table: Any) -> None:
        """Lines already joined (with their newlines) and their copy rows,
        written on a thread (file writes and Parquet compression release the
        GIL) while the caller converts the next block: one block in flight."""
        from concurrent.futures import ThreadPoolExecutor

        self.flush()
        self.fh.flush()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="import-writer")
        self._writing = self._pool.submit(self._write_block, data, table)

    def _write_block(self, data: memoryview, table: Any) -> None:
        self.fh.buffer.write(data)  # type: ignore[attr-defined]
        if self.copy is not None:
            self.copy.write(table)

    def _wait(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            writing.result()  # a write error is raised here, in order

    def flush(self) -> None:
        self._wait()
        if self.copy is not None and self.pending:
            self.copy.write(_copy_rows(self.pending))
        self.pending = []

    def close(self) -> None:
        """Everything written (errors raised); the writer thread stopped."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


def _copy_rows(lines: Sequence[str]) -> Any:
    """Columnar rows of joined lines, as a reader of the log sees them."""
    import json

    from bandit.logformat import columnar
    from bandit.logformat.events import joined_from_dsjson
    return columnar.table_from_events([joined_from_dsjson(json.loads(t)) for t in lines])


def _row_import(source: Path, mapping: ColumnMap, catalog: Mapping[str, Candidate], chunk_rows: int,
                fh: "_Output", rejects: "_RejectWriter", summary: ImportSummary, sample: int,
                progress: Progress | None) -> _Scan:
    """Both passes row by row: any mapping, events over several rows."""
    scan = _scan(source, mapping, chunk_rows, progress)
    if scan.rows == 0:
        raise MappingError(f"{source} has no data rows")
    converter = _Converter(mapping, scan, catalog)
    summary.rows_read = scan.rows
    rows = iter_rows(source, mapping.columns(), chunk_rows)
    for number, raw in enumerate(rows, start=1):
        for group in converter.feed(number, raw):
            _emit(converter, group, fh, rejects, summary, sample)
        if progress and number % 10_000 == 0:
            progress(number, scan.rows)
    for group in converter.leftovers():
        _emit(converter, group, fh, rejects, summary, sample)
    return scan


def _emit(converter: _Converter, rows: list[_Row], out: _Output, rejects: "_RejectWriter",
          summary: ImportSummary, sample: int) -> None:
    line = _record(converter, rows, rejects, summary, sample)
    if line is not None:
        out.line(line)


def _record(converter: _Converter, rows: list[_Row], rejects: "_RejectWriter", summary: ImportSummary,
            sample: int) -> str | None:
    """A decision's joined line (counted), or None with its rejections recorded."""
    joined, bad = converter.decision(rows)
    if joined is not None:
        summary.decisions_written += 1
        summary.rows_written += len(rows)
        return dumps(joined_to_dsjson(joined))
    summary.decisions_rejected += 1
    summary.rows_rejected += len(bad)
    for reject in bad:
        summary.by_kind[reject.kind] += 1
        if len(summary.rejects) < sample:
            summary.rejects.append(reject)
        rejects.write(reject)
    return None


def _open_text(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz.importing") or path.suffix == ".gz":
        return gzip.open(path, "wt", encoding="utf-8", compresslevel=6)
    return open(path, "w", encoding="utf-8")


class _RejectWriter:
    """The rejection report (CSV: row, event_id, kind, reason); a no-op without a path."""

    def __init__(self, path: Path | None):
        self.path = path
        self._fh: TextIO | None = None

    def __enter__(self) -> "_RejectWriter":
        if self.path:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8", newline="")
            self._csv = csv.writer(self._fh)
            self._csv.writerow(["row", "event_id", "kind", "reason"])
        return self

    def write(self, reject: Reject) -> None:
        if self._fh:
            self._csv.writerow([reject.row, reject.event, reject.kind, reject.reason])

    def __exit__(self, *exc: Any) -> None:
        if self._fh:
            self._fh.close()


def read_rejects(path: Path) -> list[Reject]:
    """Read a rejection report back (for checks and tooling)."""
    with open(path, encoding="utf-8", newline="") as fh:
        return [Reject(int(r["row"]), r["event_id"], r["kind"], r["reason"]) for r in csv.DictReader(fh)]


# --- the vectorised path -----------------------------------------------------
#
# The common mapping (one row per decision: no candidate or distribution
# column, event ids if any unique) is converted a column at a time with Arrow:
# each line is assembled from the template that ``joined_to_dsjson`` writes
# for its (slot, collection) and the row's formatted cells. A row any cell of
# which the column code cannot vouch for (a bad or unusual value) goes through
# the row-level code above instead, so every line and every rejection message
# is the one the row-level import writes (tests compare the two byte for byte).

class _NotVectorised(Exception):
    """This file or mapping takes the row-level path (said why, for debugging)."""


_SENTINELS = ("@@event@@", "@@time@@", "@@context@@", "@@cost@@", "@@p@@", "@@value@@")
_SAFE_ID = r"^[A-Za-z0-9_.:\-]+$"  # event ids written as they are inside a JSON string
DISTINCT_LIMIT = 4096  # at most this many distinct cells in a chunk: the row-level parser runs on each


def _vectorisable(mapping: ColumnMap) -> None:
    if mapping.candidates or mapping.distribution:
        raise _NotVectorised("candidate or distribution column")
    groups = [c.group for c in mapping.context]
    if any(g in groups[:i] and groups[i - 1] != g for i, g in enumerate(groups) if i):
        raise _NotVectorised("a context group's columns are not adjacent")  # group order would vary by row


def _arrow_batches(path: Path, columns: Sequence[str], chunk_rows: int) -> Iterator[Any]:
    """Record batches of ``columns``; CSV cells as strings with blank cells
    null (as :func:`iter_rows` yields them), Parquet as stored."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if _is_parquet(path):
        import pyarrow.parquet as pq
        yield from pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=list(columns))
        return
    import pyarrow.csv as pcsv
    names = table_columns(path)
    if len(set(names)) != len(names):
        raise _NotVectorised("duplicate header names")
    reader = pcsv.open_csv(
        path, read_options=pcsv.ReadOptions(block_size=max(1 << 20, chunk_rows * 160)),
        parse_options=pcsv.ParseOptions(delimiter=_csv_separator(path)),
        convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in names}, include_columns=list(columns),
                                            strings_can_be_null=False, quoted_strings_can_be_null=False))
    try:
        for batch in reader:
            cells = [pc.if_else(pc.equal(pc.utf8_trim_whitespace(col), ""), pa.scalar(None, pa.string()), col)
                     for col in batch.columns]
            yield pa.RecordBatch.from_arrays(cells, names=batch.schema.names)
    except pa.ArrowInvalid as exc:  # ragged rows: the row-level reader says what is wrong
        raise _NotVectorised(str(exc)) from None


def _fast_scan(path: Path, mapping: ColumnMap, chunk_rows: int, progress: Progress | None) -> _Scan:
    """:func:`_scan` a column at a time (same collection set, positions and
    column kinds); refuses files whose events span several rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from bandit.logformat import vectorised as vz

    auto = [c.column for c in mapping.context if c.kind == "auto"]
    columns = list(dict.fromkeys([mapping.action, *([mapping.event] if mapping.event else []),
                                  *([mapping.slot] if mapping.slot else []), *auto]))
    scan = _Scan(numeric={c: True for c in auto})
    seen_value: set[str] = set()
    events: list[Any] = []

    def valid_action(value: Any) -> str | None:
        action = _as_id(value)
        return action if action is not None and _valid_name(action) else None

    for batch in _arrow_batches(path, columns, chunk_rows):
        scan.rows += batch.num_rows
        answers, codes = vz.by_distinct(batch.column(mapping.action), valid_action)
        scan.actions.update(a for a in answers if isinstance(a, str))
        if mapping.slot:
            slots, slot_codes = vz.by_distinct(batch.column(mapping.slot), _as_id)
            for ac, sc in set(zip(codes.tolist(), slot_codes.tolist())):
                if answers[ac] is not None and slots[sc] is not None:
                    scan.slot_actions.setdefault(slots[sc], set()).add(answers[ac])
        if mapping.event:
            events.append(_event_ids(batch.column(mapping.event)))
        for col in auto:
            cells = batch.column(col)
            if cells.null_count < len(cells):
                seen_value.add(col)
            if scan.numeric[col] and not _all_numeric(cells):
                scan.numeric[col] = False
        if progress:
            progress(scan.rows, 0)
    for col in auto:
        scan.numeric[col] = scan.numeric[col] and col in seen_value
    if events:
        ids = pa.chunked_array(events, pa.string())
        if pc.count_distinct(ids).as_py() != len(ids) - ids.null_count:
            raise _NotVectorised("an event spans several rows")
    scan.event_rows = {}  # every event is one row (the converter's default)
    return scan


def _event_ids(cells: Any) -> Any:
    """Event ids as :func:`_as_id` reads them (strings trimmed, integers as written)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type):
        text = pc.utf8_trim_whitespace(cells)
        return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text).cast(pa.string())
    if pa.types.is_integer(cells.type):
        return pc.cast(cells, pa.string())
    raise _NotVectorised(f"event ids of type {cells.type}")


def _all_numeric(cells: Any) -> bool:
    """Every non-empty cell is a number as :func:`_numeric_cell` decides."""
    import pyarrow as pa
    from bandit.logformat import vectorised as vz

    if pa.types.is_integer(cells.type) or pa.types.is_floating(cells.type):
        return True
    if not (pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type)):
        return all(_numeric_cell(v) for v in cells.to_pylist() if v is not None)
    _, ok = vz.strict_numbers(cells)
    present = vz.mask_of(cells.is_valid())
    doubtful = np.flatnonzero(present & ~ok)
    return all(_numeric_cell(cells[int(i)].as_py()) for i in doubtful)  # stops at the first word


@dataclass
class _TokenColumn:
    """One context column's feature per row: ``names[code]`` with ``value``
    (code -1: the row has none)."""

    names: list[str]
    code: np.ndarray
    value: np.ndarray

    @classmethod
    def of_answers(cls, answers: Sequence[Any], codes: np.ndarray) -> "_TokenColumn":
        names: dict[str, int] = {}
        code_of, value_of = [], []
        for a in answers:
            if a is None or isinstance(a, Exception):
                code_of.append(-1)
                value_of.append(0.0)
            else:
                code_of.append(names.setdefault(a[1][0], len(names)))
                value_of.append(a[1][1])
        code_of.append(-1)
        value_of.append(0.0)
        return cls(list(names), np.array(code_of)[codes], np.array(value_of)[codes])


def _token_lists(columns: Sequence[_TokenColumn], rows: np.ndarray) -> tuple[Any, Any]:
    """The ``context_tokens`` and ``context_values`` cells of ``rows``: each
    row's features in column order (the order of the line's namespaces)."""
    import pyarrow as pa

    names = [name for col in columns for name in col.names]
    base = np.cumsum([0] + [len(col.names) for col in columns])[:-1]
    code = np.stack([np.where(col.code[rows] >= 0, col.code[rows] + b, -1) for col, b in zip(columns, base)], 1) \
        if columns else np.zeros((rows.size, 0), dtype=np.int64)
    value = np.stack([col.value[rows] for col in columns], 1) if columns else np.zeros((rows.size, 0))
    keep = code >= 0
    offsets = pa.array(np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32))
    flat_names = pa.array(names, pa.string()).take(pa.array(code[keep]))
    return (pa.ListArray.from_arrays(offsets, flat_names),
            pa.ListArray.from_arrays(offsets, pa.array(value[keep], pa.float64())))


class _Columns:
    """One batch's cells parsed a column at a time; ``slow`` marks rows the
    row-level code must take."""

    def __init__(self, batch: Any, converter: _Converter, first_number: int):
        self.batch, self.c, self.m = batch, converter, converter.m
        self.n = batch.num_rows
        self.numbers = np.arange(first_number, first_number + self.n)
        self.slow = np.zeros(self.n, dtype=bool)
        self.tokens: list[_TokenColumn] = []  # each context column's features, as :meth:`context` made them

    def mark(self, ok: np.ndarray) -> None:
        self.slow |= ~ok

    def by_distinct(self, column: str, fn: Callable[[Any], Any]) -> tuple[list[Any], np.ndarray]:
        from bandit.logformat import vectorised as vz
        answers, codes = vz.by_distinct(self.batch.column(column), fn)
        self.mark(vz.good(answers, codes))
        return answers, codes

    def numbers_of(self, column: str, row_level: Callable[[Any], float],
                   then: Callable[[np.ndarray], np.ndarray] = lambda v: v) -> np.ndarray:
        """Floats of a numeric column: the row-level parser per distinct cell
        when there are few, else Arrow's reading of plain decimal cells (the
        rest are marked slow, ``then`` is applied to the others). NaN where slow."""
        import pyarrow as pa
        import pyarrow.compute as pc
        from bandit.logformat import vectorised as vz

        cells = self.batch.column(column)
        if pc.count_distinct(cells, mode="all").as_py() <= DISTINCT_LIMIT:
            answers, codes = self.by_distinct(column, row_level)
            return vz.floats(answers, codes)
        if pa.types.is_integer(cells.type) or pa.types.is_floating(cells.type):
            values = np.asarray(vz.numpy_of(pc.cast(cells, pa.float64()), np.nan), dtype=np.float64)
            ok = vz.mask_of(cells.is_valid())
        elif pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type):
            values, ok = vz.strict_numbers(cells)
        else:
            raise _NotVectorised(f"column '{column}' of type {cells.type}")
        ok &= np.isfinite(values)
        self.mark(ok)
        return np.where(ok, then(values), np.nan)

    def timestamps(self) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        if not self.m.timestamp:
            return np.zeros(self.n)
        cells = self.batch.column(self.m.timestamp)
        if pa.types.is_timestamp(cells.type):
            return self._stamps(cells)
        if pa.types.is_string(cells.type) and pc.count_distinct(cells, mode="all").as_py() > DISTINCT_LIMIT:
            from bandit.logformat import vectorised as vz
            epoch, is_number = vz.strict_numbers(cells)
            stamps, is_iso = self._iso(cells)
            ok = (is_number & np.isfinite(epoch)) | is_iso
            self.mark(ok)
            return np.where(is_number, epoch, np.where(ok, stamps, 0.0))
        return self.numbers_of(self.m.timestamp, parse_timestamp)

    def _stamps(self, cells: Any) -> np.ndarray:
        """Epoch seconds of a Parquet timestamp column as the row-level reader
        sees them: whole microseconds (nanoseconds rounded, as pandas does; a
        value exactly halfway is left to the row-level code)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        from bandit.logformat import vectorised as vz

        ticks = pc.cast(cells, pa.int64())
        ok = vz.mask_of(ticks.is_valid())
        raw = np.asarray(vz.numpy_of(ticks), dtype=np.int64)
        if cells.type.unit == "ns":
            ok &= raw % 1000 != 500
            us = (raw + 500) // 1000
        else:
            us = raw * {"s": 1_000_000, "ms": 1000, "us": 1}[cells.type.unit]
        self.mark(ok)
        return us / 1e6

    @staticmethod
    def _iso(cells: Any) -> tuple[np.ndarray, np.ndarray]:
        """Epoch seconds of ISO-8601 cells of the plain form (naive = UTC), and
        where that form was found (other cells are left to the row-level parser)."""
        import pandas as pd
        import pyarrow.compute as pc
        from bandit.logformat import vectorised as vz

        plain = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?$"
        ok = vz.mask_of(pc.match_substring_regex(cells, plain))
        text = pd.Series(np.asarray(cells.to_numpy(zero_copy_only=False), dtype=object))
        stamps = pd.to_datetime(text.where(ok, "1970-01-01T00:00:00Z"), format="ISO8601", utc=True, errors="coerce")
        us = stamps.to_numpy(dtype="datetime64[us]").astype(np.int64)
        ok &= ~stamps.isna().to_numpy()
        return np.where(ok, us, 0) / 1e6, ok

    def context(self) -> Any:
        """Each row's context namespaces as JSON members followed by ',' ("" if none)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        groups: dict[str, list[Any]] = {}
        token_groups: dict[str, list[_TokenColumn]] = {}
        for col in self.m.context:
            start = len(self.tokens)
            groups.setdefault(col.group, []).append(self._feature(col))
            token_groups.setdefault(col.group, []).extend(self.tokens[start:])
        self.tokens = [t for cols in token_groups.values() for t in cols]  # the line's namespace order
        texts = []
        for group, frags in groups.items():
            inner = _join_present(frags, ",")
            key = dumps(next(iter(context_spaces([FeatureGroup(group, {})]))))
            texts.append(pc.if_else(pc.equal(inner, ""), pa.scalar(None, pa.string()),
                                    pc.binary_join_element_wise(key + ":{", inner, "}", "")))
        if not texts:
            return pa.scalar("", pa.string())
        ctx = _join_present(texts, ",")
        return pc.if_else(pc.equal(ctx, ""), "", pc.binary_join_element_wise(ctx, ",", ""))

    def _feature(self, col: ContextColumn) -> Any:
        """``"name":value`` / ``"name=category":1.0`` per row, null where the feature is absent."""
        import pyarrow as pa
        import pyarrow.compute as pc
        from bandit.logformat import vectorised as vz

        def member(value: Any) -> tuple[str, tuple[str, float]] | None:
            v = feature_value(value, numeric, col.column)
            if v is None:
                return None
            try:
                check_groups([FeatureGroup(col.group, {col.name: v})], "context")
            except FeatureError as exc:
                raise _RowError("feature", str(exc)) from None
            spaces = context_spaces([FeatureGroup(col.group, {col.name: v})])
            return dumps(spaces)[1:-1].partition(":{")[2][:-1], next(iter(tokens(spaces).items()))

        numeric = self.c.kinds[col.column]
        cells = self.batch.column(col.column)
        if not numeric or pc.count_distinct(cells, mode="all").as_py() <= DISTINCT_LIMIT:
            answers, codes = self.by_distinct(col.column, member)
            self.tokens.append(_TokenColumn.of_answers(answers, codes))
            return vz.strings(answers, codes, lambda a: None if a is None else a[0])
        present = vz.mask_of(cells.is_valid())
        if pa.types.is_integer(cells.type) or pa.types.is_floating(cells.type):
            values = np.asarray(vz.numpy_of(pc.cast(cells, pa.float64()), np.nan), dtype=np.float64)
            ok = np.ones(self.n, dtype=bool)
        else:
            values, ok = vz.strict_numbers(cells)
        values = np.where(present, values, 0.0)
        ok &= np.isfinite(values) & (np.abs(values) <= FLOAT32_MAX)
        self.mark(ok | ~present)
        stored = np.where(ok, values, 0.0).astype(np.float32).astype(np.float64)
        ns = next(iter(context_spaces([FeatureGroup(col.group, {})])))
        self.tokens.append(_TokenColumn([f"{ns}:{col.name}"], np.where(present & ok, 0, -1), stored))
        text = vz.json_floats(stored)
        joined = pc.binary_join_element_wise(dumps(col.name) + ":", text, "")
        return pc.if_else(pa.array(present), joined, pa.scalar(None, pa.string()))


def _join_present(columns: Sequence[Any], separator: str) -> Any:
    """Row-wise join of the non-null cells ("" where all are null). (Arrow
    26's join with ``null_handling="skip"`` drops the rows where every cell is
    null, so each present cell carries its separator and the last is cut.)"""
    import pyarrow.compute as pc
    if len(columns) == 1:
        return pc.fill_null(columns[0], "")
    ended = [pc.fill_null(pc.binary_join_element_wise(c, separator, ""), "") for c in columns]
    return pc.utf8_slice_codeunits(pc.binary_join_element_wise(*ended, ""), 0, -len(separator))


def _templates(converter: _Converter, combos: Sequence[tuple[str, str]]) -> tuple[list[list[str]], list[int]]:
    """For each (slot, collection): the literal pieces of its line around the
    row's fields, and which field (index into :data:`_SENTINELS`) follows each
    piece, from the line ``joined_to_dsjson`` writes for it."""
    pieces, order = [], []
    for slot, action in combos:
        row = _Row(0, _SENTINELS[0], slot=slot, action=action, propensity=0.5)
        joined, bad = converter.decision([row])
        assert joined is not None, bad
        rec = joined_to_dsjson(joined)
        out = rec["_outcomes"][0]
        rec["Timestamp"], out["_label_cost"], out["_p"][0], out["_o"][0]["v"] = _SENTINELS[1], *_SENTINELS[3:]
        rec["c"] = {_SENTINELS[2]: 0, **rec["c"]}
        text = dumps(rec) + "\n"
        marks = {_SENTINELS[0]: 0, _SENTINELS[1]: 1, f'"{_SENTINELS[2]}":0,': 2,
                 **{f'"{s}"': k for k, s in enumerate(_SENTINELS) if k > 2}}  # ids and times sit inside strings
        at = sorted((text.index(m), m) for m in marks)
        parts, start = [], 0
        for pos, m in at:
            parts.append(text[start:pos])
            start = pos + len(m)
        parts.append(text[start:])
        pieces.append(parts)
        order = [marks[m] for _, m in at]
    return pieces, order


def _fast_chunk(batch: Any, converter: _Converter, first_number: int, rejects: "_RejectWriter",
                summary: ImportSummary, sample: int, copy: bool) -> tuple[memoryview, Any]:
    """The lines of one batch, in row order (rejected rows recorded), and
    their columnar copy rows (None unless ``copy``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from bandit.logformat import vectorised as vz

    m = converter.m
    cols = _Columns(batch, converter, first_number)
    actions, action_codes = cols.by_distinct(m.action, parse_collection)
    known = np.array([isinstance(a, str) and a in converter.all_index for a in actions] + [False])
    cols.mark(known[action_codes])
    if m.slot:
        slots, slot_codes = cols.by_distinct(m.slot, parse_slot)
    else:
        slots, slot_codes = [m.default_slot], np.zeros(cols.n, dtype=np.int64)
    if m.event:
        ids = _event_ids(batch.column(m.event))
        safe = pc.fill_null(pc.match_substring_regex(ids, _SAFE_ID), False)
        cols.mark(vz.mask_of(safe))
        event = pc.if_else(safe, ids, "")
    else:
        event = pc.binary_join_element_wise("row-", pc.cast(pa.array(cols.numbers), pa.string()), "")
    p = cols.numbers_of(m.propensity, parse_propensity)
    cols.mark((p > 0) & (p <= 1))
    reward = cols.numbers_of(m.reward, lambda v: parse_reward(v, m.reward_is_cost),
                             (lambda v: -v) if m.reward_is_cost else (lambda v: v))
    low, high = REWARD_RANGE
    cols.mark((reward >= low) & (reward <= high))
    times = cols.timestamps()
    ts_text, ts_ok = vz.iso_millis(times)
    cols.mark(ts_ok)
    context = cols.context()
    fast = ~cols.slow
    pair = np.where(fast, slot_codes * (len(actions) + 1) + action_codes, -1)
    uniq, combo_of = np.unique(pair[fast], return_inverse=True)
    combo_codes = np.zeros(cols.n, dtype=np.int64)
    combo_codes[fast] = combo_of
    combos = [(slots[c // (len(actions) + 1)], actions[c % (len(actions) + 1)]) for c in uniq.tolist()]
    lines = pa.nulls(cols.n, pa.string())
    if combos:
        pieces, order = _templates(converter, combos)
        safe_p, safe_r = np.where(fast, p, 0.5), np.where(fast, reward, 0.0)
        fields = [event, ts_text, context, vz.json_floats(-safe_r), vz.json_floats(safe_p), vz.json_floats(safe_r)]
        take = pa.array(combo_codes)
        args: list[Any] = []
        for j in range(len(pieces[0])):
            literal = {parts[j] for parts in pieces}
            args.append(pieces[0][j] if len(literal) == 1 else pa.array([parts[j] for parts in pieces]).take(take))
            if j < len(order):
                args.append(fields[order[j]])
        lines = pc.if_else(pa.array(fast), pc.binary_join_element_wise(*args, "", null_handling="replace",
                                                                       null_replacement=""),
                           pa.scalar(None, pa.string()))
        summary.decisions_written += int(fast.sum())
        summary.rows_written += int(fast.sum())
        summary.rows_vectorised += int(fast.sum())
    slow_rows = np.flatnonzero(cols.slow)
    if slow_rows.size:
        written = np.zeros(cols.n, dtype=bool)
        texts = []
        for i in slow_rows.tolist():
            raw = {name: batch.column(name)[i].as_py() for name in m.columns()}
            text = _record(converter, [converter.parse(int(cols.numbers[i]), raw)], rejects, summary, sample)
            if text is not None:
                written[i] = True
                texts.append(text + "\n")
        if texts:
            lines = pc.replace_with_mask(lines, pa.array(written), pa.array(texts, pa.string()))
    table = None
    if copy:
        extra = (np.flatnonzero(written), [t[:-1] for t in texts]) if slow_rows.size else (np.zeros(0, int), [])
        table = _chunk_copy(converter, fast, combos, combo_codes, event, times, slots, slot_codes, p, reward, extra,
                            cols.tokens)
    return vz.lines_bytes(lines), table


def _chunk_copy(converter: _Converter, fast: np.ndarray, combos: Sequence[tuple[str, str]], combo_codes: np.ndarray,
                event: Any, times: np.ndarray, slots: Sequence[Any], slot_codes: np.ndarray, p: np.ndarray,
                reward: np.ndarray, extra: tuple[np.ndarray, list[str]], context: Sequence[_TokenColumn]) -> Any:
    """Columnar copy rows of a batch's written decisions, in row order: the
    vectorised ones from their cells (times as the log's milliseconds), the
    others from their lines."""
    import pyarrow as pa
    from bandit.logformat import columnar
    from bandit.logformat import vectorised as vz

    rows = np.flatnonzero(fast)
    picked = [converter._candidates([_Row(0, "", slot=slot, action=action)]) for slot, action in combos]
    sets = [ids for ids, _, _ in picked]
    served = np.array([ids.index(action) for ids, (_, action) in zip(sets, combos)], dtype=np.int64)
    listed = pa.array([columnar.SEPARATOR.join(ids) for ids in sets], pa.string())
    every = pa.array([columnar.SEPARATOR.join(map(str, range(len(ids)))) for ids in sets], pa.string())
    features = pa.array([columnar.candidates_json(cands) for _, _, cands in picked], pa.string())
    where_shown = pa.array([columnar.features_json(slot_tokens(SlotSpec(slot), slot, 0)) for slot, _ in combos],
                           pa.string())
    code = pa.array(combo_codes[rows])
    ms, _ = vz.millis(times[rows])
    context_tokens, context_values = _token_lists(context, rows)
    table = columnar.table_from_columns(
        event_id=event.take(pa.array(rows)), timestamp=(ms * 1000) / 1e6, choice=np.zeros(rows.size, np.int16),
        slot_id=vz.strings(list(slots), slot_codes, lambda a: a).take(pa.array(rows)), default_collection="",
        action=served[combo_codes[rows]], probability=p[rows], reward=reward[rows],
        observed=np.ones(rows.size, bool), chosen_only=np.ones(rows.size, bool),
        candidates=listed.take(code), allowed=every.take(code), ranking_action=None, ranking_prob=None,
        context_tokens=context_tokens, context_values=context_values, slot_tokens=where_shown.take(code),
        candidate_tokens=features.take(code))
    where, texts = extra
    if not texts:
        return table
    table = pa.concat_tables([table, _copy_rows(texts)])
    return table.take(pa.array(np.argsort(np.concatenate([rows, where]), kind="stable")))


def _fast_import(source: Path, mapping: ColumnMap, catalog: Mapping[str, Candidate], chunk_rows: int,
                 out: _Output, rejects: "_RejectWriter", summary: ImportSummary, sample: int,
                 progress: Progress | None) -> _Scan:
    """Both passes a column at a time; :class:`_NotVectorised` when the file
    needs the row-level path (the caller starts again with fresh files)."""
    _vectorisable(mapping)
    scan = _fast_scan(source, mapping, chunk_rows, progress)
    if scan.rows == 0:
        raise MappingError(f"{source} has no data rows")
    converter = _Converter(mapping, scan, catalog)
    summary.rows_read = scan.rows
    done = 0
    for batch in _arrow_batches(source, mapping.columns(), chunk_rows):
        out.block(*_fast_chunk(batch, converter, done + 1, rejects, summary, sample, out.copy is not None))
        done += batch.num_rows
        if progress:
            progress(done, scan.rows)
    return scan
