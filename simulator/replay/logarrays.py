"""The log as arrays: joined events in time order, per slot.

Reward, logged action, logging propensity and candidate mask per (event,
slot): the mask holds what slot k could show given the *logged* earlier slots
(the slot walk of :class:`bandit.decision.DecisionInput`), which is what each
propensity is conditioned on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bandit.logformat import columnar
from bandit.ope.reward_model import RewardInputs, decision_keys
from bandit.logformat.events import JoinedEvent, LogFormatError, SkippedLines, read_joined
from simulator.specs import TargetError

_SUM_TOL = 1e-6


@dataclass
class ReplayLog:
    """A joined log as per-slot arrays, events in time order.

    Columns are slots by slot id (positions sort numerically), so a log of
    single-choice rows at several positions (an imported one with a position
    column) gets one column per position instead of pooling them.
    ``column[i][j]`` is the column of event i's j-th choice (targets and the
    reward model see choices in the event's own order).

    Events without a slot are padded there: reward 0, action 0, propensity
    1, mask only action 0, and every target is one-hot there -- weight 1 and
    reward 0, so a padded slot adds exactly nothing to a page value.

    Built from the columnar rows (:mod:`bandit.logformat.columnar`), a column
    at a time; the joined events themselves (features, for VW targets and the
    reward model) are read from the DSJSON log only when something asks for
    :attr:`events`.
    """

    reward: np.ndarray  # (n, K)
    action: np.ndarray  # (n, K) int
    pscore: np.ndarray  # (n, K) NaN where missing
    mask: np.ndarray  # (n, K, A) bool
    present: np.ndarray  # (n, K) bool
    logged_dist: np.ndarray  # (n, K, A) the logging policy's ranking; NaN where unknown (chosen_only)
    slot_labels: list[str]
    event_id_column: pa.Array  # (n,) the event ids (see event_ids)
    timestamps: np.ndarray  # (n,)
    observed: np.ndarray  # (n, K) a reward came (padded slots: True)
    collection: np.ndarray  # (n, A) index into collection_ids of each candidate, -1 padded
    collection_ids: list[str]
    default_index: np.ndarray  # (n, K) candidate index of the slot's default collection, -1 if none
    choice_column: np.ndarray  # (n, J) column of each event's j-th choice, -1 padded
    allowed_code: np.ndarray  # (n, J) index into allowed_lists, -1 padded
    allowed_lists: list[list[int]]
    slot_id_code: np.ndarray  # (n, K) index into slot_ids of each choice's own slot id, -1 padded
    slot_ids: list[str]
    sources: list[str] = field(default_factory=list)
    # (n,) events whose log carries only the chosen actions' propensities
    chosen_only: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # torn lines (a crash mid-write) the reader skipped, with file and line
    skipped: SkippedLines = field(default_factory=SkippedLines)
    # (n,) each event's drop probability under subsampling (the joined line's
    # pdrop; empty or zeros: a full log); estimates weight by 1 / (1 - pdrop)
    pdrop: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loader: Callable[[], list[JoinedEvent]] | None = None  # the events, in this log's order
    _events: list[JoinedEvent] | None = None
    # the reward model's features (bandit.ope.reward_model.RewardInputs), read
    # from the columnar rows when a model is fitted
    features: Callable[[], RewardInputs] | None = None

    @property
    def events(self) -> list[JoinedEvent]:
        """The joined events (read from the log on first use)."""
        if self._events is None:
            if self.loader is None:
                raise LogFormatError("this log was read without its events")
            events = self.loader()
            if [e.decision.event_id for e in events] != list(self.event_ids):
                raise LogFormatError("the log's events do not match its columnar copy (rewritten since?)")
            self._events = events
        return self._events

    @cached_property
    def allowed(self) -> list[list[list[int]]]:
        """[event][choice] candidate indices available (for per-event targets)."""
        table = self.allowed_lists
        return [[list(table[c]) for c in row if c >= 0] for row in self.allowed_code.tolist()]

    @cached_property
    def column(self) -> list[list[int]]:
        return [[k for k in row if k >= 0] for row in self.choice_column.tolist()]

    @property
    def positional(self) -> bool:
        """Every event fills one slot and there are several: rows at positions,
        not pages (the page value is then the sum of the position values)."""
        return self.shape[1] > 1 and bool((self.present.sum(axis=1) == 1).all())

    @property
    def n(self) -> int:
        return len(self.event_id_column)

    @cached_property
    def event_ids(self) -> np.ndarray:
        """(n,) the event ids as Python strings."""
        return np.asarray(self.event_id_column.to_pylist(), dtype=object)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.mask.shape  # type: ignore[return-value]

    @classmethod
    def from_events(cls, events: Iterable[JoinedEvent], sources: Sequence[str] = ()) -> "ReplayLog":
        """Arrays from joined events (sorted by decision time, stable)."""
        events = list(events)
        log = cls.from_table(columnar.table_from_events(events), sources)
        order = np.argsort(np.array([e.decision.timestamp for e in events]), kind="stable")
        log._events = [events[i] for i in order]
        return log

    @classmethod
    def from_table(cls, table: pa.Table, sources: Sequence[str] = (),
                   loader: Callable[[], list[JoinedEvent]] | None = None,
                   feature_table: Callable[[], pa.Table] | None = None) -> "ReplayLog":
        """Arrays from columnar rows (:data:`bandit.logformat.columnar.SCHEMA`),
        events sorted by decision time (stable), a column at a time.
        ``feature_table`` reads the reward model's columns when they are
        needed (else ``table``'s are kept for it)."""
        if table.num_rows == 0:
            raise LogFormatError("the log has no events")
        rows = _Rows(table)
        return rows.log(sources, loader, feature_table or table.select(["event_id", *columnar.FEATURES]))

    def by_choice(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(action, reward, present) indexed by each event's own choice order
        (n, J): what code reading ``event.decision.choices[j]`` needs."""
        cols = self.choice_column
        present = cols >= 0
        safe = np.maximum(cols, 0)
        action = np.where(present, np.take_along_axis(self.action, safe, axis=1), 0)
        reward = np.where(present, np.take_along_axis(self.reward, safe, axis=1), 0.0)
        return action.astype(np.int64), reward, present

    def to_columns(self, per_choice: np.ndarray) -> np.ndarray:
        """(n, J, ...) by choice order -> (n, K, ...) by slot column (zeros where padded)."""
        out = np.zeros((self.n, self.shape[1]) + per_choice.shape[2:], dtype=per_choice.dtype)
        i, j = np.nonzero(self.choice_column >= 0)
        out[i, self.choice_column[i, j]] = per_choice[i, j]
        return out


MAX_KEYED_SLOTS = 64  # more distinct slot ids than this: columns by position in the event


class _Rows:
    """Columnar rows grouped into events in time order."""

    def __init__(self, table: pa.Table):
        self.t = table
        choice = _np(table["choice"])
        starts = np.flatnonzero(choice == 0)
        if starts.size == 0 or starts[0] != 0:
            raise LogFormatError("columnar rows do not start an event at the first row")
        event_of = np.cumsum(choice == 0) - 1
        ts = _np(table["timestamp"])[starts]
        order = np.argsort(ts, kind="stable")  # events in time order, ties in log order
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        self.n = order.size
        self.event = rank[event_of]  # each row's event, time order
        self.j = choice.astype(np.int64)
        self.starts, self.order = starts, order
        self.timestamps = ts[order]

    def strings(self, name: str) -> tuple[list[str], np.ndarray]:
        """A dictionary column's distinct values and each row's code."""
        return _dictionary(self.t[name])

    def log(self, sources: Sequence[str], loader: Callable[[], list[JoinedEvent]] | None,
            features: pa.Table | Callable[[], pa.Table]) -> ReplayLog:
        n = self.n
        cand_sets, cand_code = self.strings("candidates")
        cand_lists = [s.split(columnar.SEPARATOR) if s else [] for s in cand_sets]
        event_cands = np.zeros(n, dtype=np.int64)
        event_cands[self.event[self.j == 0]] = cand_code[self.j == 0]
        sizes = np.array([len(c) for c in cand_lists])
        a_max = int(sizes[event_cands].max())
        labels, column = self.slot_columns()
        k_max = len(labels)
        if k_max == 0 or a_max == 0:
            raise LogFormatError("the log's events have no slots or no candidates")
        action = _np(self.t["action"]).astype(np.int64)
        bad = (action < 0) | (action >= sizes[cand_code])
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise LogFormatError(f"event {self.t['event_id'][r].as_py()}: slot {self.t['slot_id'][r].as_py()} logged "
                                 f"action {action[r]} but the event has {sizes[cand_code[r]]} candidates")
        i, k = self.event, column
        reward, pscore = np.zeros((n, k_max)), np.ones((n, k_max))
        reward[i, k] = _np(self.t["reward"], np.nan)
        pscore[i, k] = _np(pc.cast(self.t["probability"], pa.float64()), np.nan)
        acts = np.zeros((n, k_max), dtype=np.int64)
        acts[i, k] = action
        present = np.zeros((n, k_max), dtype=bool)
        present[i, k] = True
        observed = np.ones((n, k_max), dtype=bool)
        observed[i, k] = _np(self.t["observed"], False).astype(bool)
        allowed_sets, allowed_code = self.strings("allowed")
        allowed_lists = [[int(a) for a in s.split(columnar.SEPARATOR)] if s else [] for s in allowed_sets]
        mask = np.zeros((n, k_max, a_max), dtype=bool)
        mask[:, :, 0] = True
        mask[i, k, 0] = False
        for code, members in enumerate(allowed_lists):
            rows = np.flatnonzero(allowed_code == code)
            if rows.size and members:
                mask[i[rows][:, None], k[rows][:, None], np.array(members)[None, :]] = True
        chosen_only = np.zeros(n, dtype=bool)
        chosen_only[self.event] = _np(self.t["chosen_only"], False).astype(bool)
        pdrop = np.zeros(n)
        pdrop[self.event] = _np(self.t["pdrop"], 0.0)
        logged = self.logged(i, k, chosen_only, mask, (n, k_max, a_max))
        j_max = int(self.j.max()) + 1
        choice_column = np.full((n, j_max), -1, dtype=np.int64)
        choice_column[i, self.j] = k
        code_of = np.full((n, j_max), -1, dtype=np.int64)
        code_of[i, self.j] = allowed_code
        collection, ids = _collections(cand_lists, event_cands, a_max)
        default_index = self.defaults(i, k, cand_lists, cand_code, (n, k_max))
        ids_column = self.t["event_id"]
        ids_column = ids_column.combine_chunks() if isinstance(ids_column, pa.ChunkedArray) else ids_column
        event_ids = ids_column.take(pa.array(self.starts[self.order]))
        slot_names, slot_code = self.strings("slot_id")
        slot_id_code = np.full((n, k_max), -1, dtype=np.int64)
        slot_id_code[i, k] = slot_code
        return ReplayLog(reward, acts, pscore, mask, present, logged, labels, event_ids, self.timestamps, observed,
                         collection, ids, default_index, choice_column, code_of, allowed_lists, slot_id_code,
                         slot_names, list(sources), chosen_only, pdrop=pdrop, loader=loader,
                         features=partial(reward_inputs, features, self.starts[self.order], self.event, self.j,
                                          self.timestamps, (n, j_max, a_max)))

    def slot_columns(self) -> tuple[list[str], np.ndarray]:
        """Slot labels and each row's column: one column per slot id (integer
        ids numerically, else by earliest position then first seen); with too
        many ids (or an event naming one twice), columns by position."""
        ids, code = self.strings("slot_id")
        key = self.j * (self.n + 1) + self.event  # (position, event): earliest first
        first = np.full(len(ids), np.iinfo(np.int64).max)
        np.minimum.at(first, code, key)
        used = [c for c in range(len(ids)) if first[c] != np.iinfo(np.int64).max]
        pair = self.event * (len(ids) + 1) + code
        repeated = np.unique(pair).size < pair.size
        if len(used) > MAX_KEYED_SLOTS or repeated:
            k_max = int(self.j.max()) + 1
            labels = []
            for k in range(k_max):
                names = np.unique(code[self.j == k])
                labels.append(ids[int(names[0])] if names.size == 1 else f"#{k}")
            return labels, self.j.copy()
        names = [ids[c] for c in used]
        if all(s.isdigit() for s in names):
            ranked = sorted(used, key=lambda c: int(ids[c]))
        else:
            ranked = sorted(used, key=lambda c: first[c])
        index = np.full(len(ids), -1, dtype=np.int64)
        index[ranked] = np.arange(len(ranked))
        return [ids[c] for c in ranked], index[code]

    def logged(self, i: np.ndarray, k: np.ndarray, chosen_only: np.ndarray, mask: np.ndarray,
               shape: tuple[int, int, int]) -> np.ndarray:
        """The logged rankings as dense rows (:func:`as_row`, lenient), NaN where
        unknown (a log of chosen propensities only: one read-only NaN, broadcast,
        instead of n x K x A of them)."""
        if chosen_only.all():
            return np.broadcast_to(np.float64(math.nan), shape)
        logged = np.zeros(shape)
        logged[:, :, 0] = 1.0
        logged[i, k] = 0.0
        ra, rp = self.t["ranking_action"], self.t["ranking_prob"]
        ra = ra.combine_chunks() if isinstance(ra, pa.ChunkedArray) else ra
        rp = rp.combine_chunks() if isinstance(rp, pa.ChunkedArray) else rp
        parent = _np(pc.list_parent_indices(ra)).astype(np.int64)
        a = _np(pc.list_flatten(ra)).astype(np.int64)
        p = _np(pc.list_flatten(rp), np.nan)
        ri, rk = i[parent], k[parent]
        inside = (a >= 0) & (a < shape[2])
        keep = inside & (p > 0) & np.isfinite(p)
        keep[inside] &= mask[ri[inside], rk[inside], a[inside]]
        np.add.at(logged, (ri[keep], rk[keep], a[keep]), p[keep])
        known = ~_np(self.t["chosen_only"], False).astype(bool)
        rows_i, rows_k = i[known], k[known]
        block = logged[rows_i, rows_k]
        total = block.sum(axis=-1)
        allowed = mask[rows_i, rows_k]
        empty = total <= 0
        off = ~empty & (np.abs(total - 1.0) > _SUM_TOL)
        block[off] /= total[off][:, None]
        block[empty] = allowed[empty] / allowed[empty].sum(axis=-1, keepdims=True)
        logged[rows_i, rows_k] = block
        unknown = ~known
        logged[i[unknown], k[unknown]] = math.nan
        return logged

    def defaults(self, i: np.ndarray, k: np.ndarray, cand_lists: list[list[str]], cand_code: np.ndarray,
                 shape: tuple[int, int]) -> np.ndarray:
        """Candidate index of each slot's default collection (-1: none or not a candidate)."""
        names, code = self.strings("default_collection")
        pair = cand_code * (len(names) + 1) + code
        uniq, inverse = np.unique(pair, return_inverse=True)
        found = []
        for value in uniq.tolist():
            cands, name = cand_lists[value // (len(names) + 1)], names[value % (len(names) + 1)]
            found.append(cands.index(name) if name and name in cands else -1)
        out = np.full(shape, -1, dtype=np.int64)
        out[i, k] = np.array(found, dtype=np.int64)[inverse.ravel()]
        return out


def _chunk(column: Any) -> Any:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _dictionary(column: Any) -> tuple[list[Any], np.ndarray]:
    """A string column's distinct values and each row's code."""
    column = _chunk(column)
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    return column.dictionary.to_pylist(), _np(column.indices).astype(np.int64)


def reward_inputs(table: pa.Table | Callable[[], pa.Table], first_rows: np.ndarray, event: np.ndarray,
                  choice: np.ndarray, timestamps: np.ndarray, shape: tuple[int, int, int]) -> RewardInputs:
    """The reward model's features from columnar rows (``event_id`` and
    :data:`bandit.logformat.columnar.FEATURES`, or what reads them), a column
    at a time: decision i (time order) starts at row ``first_rows[i]``; row r
    is choice ``choice[r]`` of decision ``event[r]``."""
    import orjson
    import scipy.sparse as sp

    if callable(table):
        table = table()
    n, j_max, a_max = shape
    key = decision_keys(*_utf8(_chunk(table["event_id"]).take(pa.array(first_rows))), timestamps)
    toks = _chunk(table["context_tokens"]).take(pa.array(first_rows))
    vals = _chunk(table["context_values"]).take(pa.array(first_rows))
    names, codes = _dictionary(pc.list_flatten(toks))
    sorted_names = sorted(names)
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names))
    indptr = _np(pc.fill_null(pc.list_value_length(toks), 0)).astype(np.int64).cumsum()
    context = sp.csr_matrix((_np(pc.list_flatten(vals), 0.0).astype(float), rank[codes] if codes.size else codes,
                             np.concatenate([[0], indptr])), shape=(n, len(names)))
    slot_sets, slot_code = _dictionary(table["slot_tokens"])
    slot_of = np.full((n, j_max), -1, dtype=np.int64)
    slot_of[event, choice] = slot_code
    list_sets, list_code = _dictionary(_chunk(table["candidate_tokens"]).take(pa.array(first_rows)))
    lists = [[(repr(sorted(t.items())), t) for t in orjson.loads(text)] for text in list_sets]
    distinct = {k: t for cands in lists for k, t in cands}
    distinct = {k: distinct[k] for k in sorted(distinct)}  # key -> tokens, in a listing-free order
    renumber = {k: j for j, k in enumerate(distinct)}
    table_of = np.full((len(lists), a_max), -1, dtype=np.int64)
    for li, cands in enumerate(lists):
        table_of[li, :len(cands)] = [renumber[k] for k, _ in cands]
    return RewardInputs(key, context, sorted_names, slot_of, [orjson.loads(t) for t in slot_sets],
                        table_of[list_code], list(distinct.values()))


def _utf8(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, bytes) of a string array: string i is ``bytes[offsets[i]:offsets[i+1]]``."""
    strings = strings.cast(pa.large_string())  # also dictionary-encoded ones; 64-bit offsets
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64, count=len(strings) + 1, offset=strings.offset * 8)
    data = strings.buffers()[2]
    return offsets, np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)


def _np(column: Any, fill: Any = 0) -> np.ndarray:
    """A column as numpy (nulls as ``fill``)."""
    column = _chunk(column)
    if column.null_count:
        column = pc.fill_null(column, fill)
    return column.to_numpy(zero_copy_only=False)


def _collections(cand_lists: list[list[str]], event_cands: np.ndarray, a_max: int) -> tuple[np.ndarray, list[str]]:
    """(n, A) global index of each event's candidates (-1 padded), ids numbered
    in first-seen order over the events in time order."""
    ids: dict[str, int] = {}
    sets, first = np.unique(event_cands, return_index=True)
    table = np.full((len(cand_lists), a_max), -1, dtype=np.int64)
    for s in sets[np.argsort(first)].tolist():
        members = [ids.setdefault(c, len(ids)) for c in cand_lists[s]]
        table[s, :len(members)] = members
    return table[event_cands], list(ids)


def as_row(dist: Iterable[tuple[int, float]], allowed: list[int], width: int, where: str,
         lenient: bool = False) -> np.ndarray:
    """A distribution as a dense row restricted to ``allowed``; renormalised only
    when off by more than float rounding (so the logged ranking stays exact)."""
    row = np.zeros(width)
    allowed_set = set(allowed)
    for a, p in dist:
        if a in allowed_set and p > 0 and math.isfinite(p):
            row[a] += p
    total = row.sum()
    if total <= 0:
        if lenient:  # an unusable logged ranking: uniform (only diagnostics use it)
            row[allowed] = 1.0 / len(allowed)
            return row
        raise TargetError(f"{where}: the target puts no probability on any available collection")
    if abs(total - 1.0) > _SUM_TOL:
        row /= total
    return row


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given; a directory means its ``*.dsjson`` / ``*.dsjson.gz`` / ``*.json(.gz)`` files."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and
                           any(p.name.endswith(s) for s in (".dsjson", ".dsjson.gz", ".json", ".json.gz", ".jsonl")))
            if not found:
                raise LogFormatError(f"{path}: directory has no .dsjson/.json(.gz) files")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise LogFormatError(f"{path}: no such file or directory")
    return out


def load_log(paths: Sequence[Path], cache: bool = True) -> ReplayLog:
    """The joined logs as arrays; torn lines are skipped, and reported (see ``skipped``).

    Each log is read from its columnar copy when one made from it as it is
    now lies next to it (``placement import`` writes one); otherwise from
    the DSJSON lines, and the copy is written then (``cache``) so the next
    replay of the same log loads in seconds. The events themselves are read
    from the DSJSON only if a target or estimator asks for them."""
    files = expand_paths(paths)
    skipped = SkippedLines()
    tables, events_read, copies = [], [], []
    for path in files:
        copy = columnar.current_copy(path)
        if copy is not None:
            table, lines = columnar.read_copy(copy, features=False)  # read again if a reward model is fitted
            copies.append(copy)
            for number in lines:
                skipped.add(path, number)
            tables.append(table)
            continue
        mine = SkippedLines()
        events = list(read_joined([path], mine))
        table = columnar.table_from_events(events)
        if cache and events:
            try:
                columnar.write_copy(path, table, [number for _, number in mine.where])
            except OSError:  # a read-only directory: replay without the copy
                pass
        skipped.where += mine.where
        tables.append(columnar.encoded(table.drop_columns(list(columnar.FEATURES))))
        copies.append(table.select(["event_id", *columnar.FEATURES]))
        events_read += events
    if not tables or not sum(t.num_rows for t in tables):
        raise LogFormatError("the log has no events")
    table = pa.concat_tables(tables).unify_dictionaries()
    # partials, not lambdas: the process pool and Ray ship the log to workers
    log = ReplayLog.from_table(table, [str(p) for p in files], partial(_sorted_events, list(files)),
                               partial(_feature_columns, copies))
    if len(events_read) == log.n:  # every file was read as lines: keep them
        log._events = [events_read[i] for i in np.argsort([e.decision.timestamp for e in events_read],
                                                          kind="stable")]
    log.skipped = skipped
    return log


def _feature_columns(sources: Sequence[Path | pa.Table]) -> pa.Table:
    """The reward model's columns of every file, in load order: read from its
    columnar copy (a path) or kept from its lines (a table)."""
    parts = [columnar.read_features(s) if isinstance(s, Path) else s for s in sources]
    return pa.concat_tables(parts).unify_dictionaries()


def _sorted_events(files: Sequence[Path]) -> list[JoinedEvent]:
    """The joined events of ``files`` in decision-time order (stable)."""
    events = list(read_joined(files))
    order = np.argsort(np.array([e.decision.timestamp for e in events]), kind="stable")
    return [events[i] for i in order]


def log_summary(log: ReplayLog) -> dict[str, Any]:
    rewards = log.reward[log.present]
    ts = log.timestamps
    if log.positional:  # rows are positions: the page is the sum of the positions' means
        page = sum(float(log.reward[log.present[:, k], k].mean()) for k in range(log.shape[1])
                   if log.present[:, k].any())
    else:
        page = float(log.reward.sum(axis=1).mean())
    return {"files": log.sources, "events": log.n, "slots": log.slot_labels, "max_candidates": log.shape[2],
            "slot_decisions": int(log.present.sum()), "mean_reward_per_slot": float(rewards.mean()),
            "mean_page_reward": page, "positional": log.positional,
            "reward_range": [float(rewards.min()), float(rewards.max())] if rewards.size else [0.0, 0.0],
            "reward_observed_share": float(np.mean(log.observed[log.present])),
            "first_timestamp": float(ts.min()), "last_timestamp": float(ts.max()),
            "torn_lines_skipped": len(log.skipped),
            "torn_lines": [f"{path}:{number}" for path, number in log.skipped.where]}
