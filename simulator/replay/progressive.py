"""Progressive replay: a target policy over the log in time order.

Each event is valued first -- pi(. | x, logged a_<k) per slot -- and then the
target learns from it, so a learning target is valued only on events it has
not seen yet (progressive validation). Many targets run at once through
:mod:`simulator.fanout`; VW targets are the heavy ones.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bandit.logformat.events import JoinedEvent
from simulator import fanout
from simulator.replay.logarrays import ReplayLog, as_row
from simulator.replay.targets import PROB_TOLERANCE, Target, TargetSpec, make_target

Progress = Callable[[int], None]


def target_distributions(log: ReplayLog, target: Target, events: Sequence[JoinedEvent] | None = None,
                         progress: Progress | None = None) -> np.ndarray:
    """pi(. | x_i, logged a_<k) as (n, K, A), valuing each event *before* the
    target learns from it. ``events`` may replace the log's (same decisions,
    transformed features, e.g. an ablated group)."""
    events = log.events if events is None else events
    n, k_max, a_max = log.shape
    dist = np.zeros((n, k_max, a_max))
    dist[:, :, 0] = 1.0  # padded slots: one-hot where the log is padded
    for i, joined in enumerate(events):
        for j, allowed in enumerate(log.allowed[i]):  # j: the event's own choice order
            where = f"{target.name}: event {joined.decision.event_id} slot {joined.decision.choices[j].slot_id}"
            dist[i, log.column[i][j]] = as_row(target.distribution(joined, j, allowed), allowed, a_max, where)
        target.learn(joined)
        if progress and (i + 1) % 100 == 0:
            progress(100)
    if progress:
        progress(n % 100)
    return dist


@dataclass(frozen=True)
class ProgressiveTask:
    """One pass of a target over the log (picklable, for worker processes);
    ``transform`` rewrites each event first (e.g. an ablated feature group)."""

    spec: TargetSpec
    transform: Callable[[JoinedEvent], JoinedEvent] | None = None

    @property
    def heavy(self) -> bool:
        """Worth a process of its own: it trains or runs VW."""
        return self.spec.kind in ("vw", "model")


COLUMN_TARGETS = ("uniform", "logged", "baseline", "probs")  # kinds builtin_distributions can compute


def builtin_distributions(log: ReplayLog, spec: TargetSpec) -> np.ndarray | None:
    """A built-in target's distributions (n, K, A) a column at a time, equal to
    what its :class:`simulator.replay.targets.Target` gives event by event
    (tests compare); None for the targets that need the events."""
    if spec.kind == "uniform":
        return log.mask / log.mask.sum(axis=-1, keepdims=True)
    if spec.kind == "logged":
        return _logged(log)
    if spec.kind == "baseline":
        return _baseline(log)
    if spec.kind == "probs" and spec.path is not None:
        return external_distributions(log, spec.path)
    return None


def external_distributions(log: ReplayLog, path: Path) -> np.ndarray | None:
    """A probabilities file (:class:`simulator.replay.targets.ExternalProbabilities`'
    format) read and matched to the log a column at a time; None when any line
    is not plainly right (then the event-by-event target reads it and names
    the file, line and problem)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        table = _probabilities_table(path)
        probs = table.column("probabilities").combine_chunks()
        ids = [table.column(name).combine_chunks() for name in ("event_id", "slot_id")]
    except (KeyError, pa.ArrowInvalid, OSError):
        return None
    if not pa.types.is_struct(probs.type) or probs.null_count or any(
            not pa.types.is_string(c.type) or c.null_count for c in ids):
        return None
    names = [probs.type.field(f).name for f in range(probs.type.num_fields)]
    if any(not (pa.types.is_floating(f.type) or pa.types.is_integer(f.type)) for f in probs.type):
        return None
    values = np.column_stack([_numbers(probs.field(f)) for f in range(len(names))])  # NaN: not given
    given = ~np.isnan(values)
    total = np.where(given, values, 0.0).sum(axis=1)
    if ((values < 0) | np.isinf(values)).any() or (~given.any(axis=1)).any() or \
            (np.abs(total - 1.0) > PROB_TOLERANCE).any():
        return None
    if any(pc.any(pc.match_substring(c, "\x1f")).as_py() for c in ids):
        return None  # the separator of the keys below
    keys = pc.binary_join_element_wise(ids[0], ids[1], "\x1f")  # (event, slot): unit separator between
    if pc.count_distinct(keys).as_py() < len(keys) or not pc.all(pc.is_in(ids[0], log.event_id_column)).as_py():
        return None  # a line given twice or about an event the log does not have
    i, k = np.nonzero(log.present)
    slot_names = pa.array(log.slot_ids, pa.string()).take(pa.array(log.slot_id_code[i, k]))
    wanted = pc.binary_join_element_wise(log.event_id_column.take(pa.array(i)), slot_names, "\x1f")
    found = pc.index_in(wanted, value_set=keys)
    if found.null_count:
        return None  # a decision the file gives no probabilities for
    line = found.to_numpy(zero_copy_only=False).astype(np.int64)
    dist = np.zeros(log.shape)
    dist[:, :, 0] = 1.0
    dist[i, k] = 0.0
    index = {cid: g for g, cid in enumerate(log.collection_ids)}
    where = np.full((len(i), len(log.collection_ids) + 1), -1, dtype=np.int64)  # [row, collection] -> candidate
    cands = log.collection[i]
    r, a_all = np.nonzero(cands >= 0)
    where[r, cands[r, a_all]] = a_all
    for f, cid in enumerate(names):
        here = given[line, f]
        if not here.any():
            continue
        a = where[:, index.get(cid, len(log.collection_ids))]
        if (a[here] < 0).any():
            return None  # a collection that is not a candidate of its event
        a = np.maximum(a, 0)
        p = values[line, f]
        usable = here & log.mask[i, k, a]
        if (here & ~usable & (p > 0)).any():
            return None  # probability on a collection the slot could not show
        dist[i[usable], k[usable], a[usable]] += p[usable]
    total = dist[i, k].sum(axis=-1)
    if (total <= 0).any():
        return None
    dist[i, k] /= total[:, None]
    return dist


def _probabilities_table(path: Path) -> Any:
    """A probabilities file as a table (read once per replay: checked, then used)."""
    st = Path(path).stat()
    return _read_json(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read_json(path: str, size: int, mtime_ns: int) -> Any:
    import pyarrow.json as pajson
    return pajson.read_json(path)


def events_known(log: ReplayLog, path: Path) -> bool:
    """Every line of a probabilities file is about an event of the log (read
    as columns; False also when the file cannot be read so)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        column = _probabilities_table(path).column("event_id").combine_chunks()
    except (KeyError, pa.ArrowInvalid, OSError):
        return False
    if not pa.types.is_string(column.type) or column.null_count:
        return False
    return bool(pc.all(pc.is_in(column, log.event_id_column)).as_py())


def _numbers(column: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc
    return pc.fill_null(pc.cast(column, pa.float64()), np.nan).to_numpy(zero_copy_only=False)


def _logged(log: ReplayLog) -> np.ndarray:
    """The logged ranking; where only the chosen propensity p is known (the
    ``Logged`` target's stand-in, which every estimator needing more refuses):
    p on the chosen collection, 1 - p spread over the other available ones."""
    i = np.flatnonzero(log.chosen_only)
    if not i.size:
        return np.array(log.logged_dist)
    every = i.size == log.n
    dist = np.empty(log.shape) if every else np.array(log.logged_dist)
    mask = log.mask if every else log.mask[i]
    action = log.action if every else log.action[i]
    m = mask.sum(axis=-1) - np.take_along_axis(mask, action[..., None], axis=-1)[..., 0]  # the others
    p = log.pscore if every else log.pscore[i]
    part = dist if every else np.empty(mask.shape)  # written in place: n x K x A floats once, not four times
    np.multiply(mask, ((1 - p) / np.maximum(m, 1))[..., None], out=part)
    np.put_along_axis(part, action[..., None], np.where(m > 0, p, 1.0)[..., None], axis=-1)
    if not every:
        dist[i] = part
    return dist


def _baseline(log: ReplayLog) -> np.ndarray:
    """The slot's default collection where available, else the first available."""
    first = np.array([row[0] if row else 0 for row in log.allowed_lists], dtype=np.int64)
    firsts = np.zeros(log.shape[:2], dtype=np.int64)
    i, j = np.nonzero(log.allowed_code >= 0)
    firsts[i, log.choice_column[i, j]] = first[log.allowed_code[i, j]]
    d = log.default_index
    usable = (d >= 0) & np.take_along_axis(log.mask, np.maximum(d, 0)[..., None], axis=-1)[..., 0]
    pick = np.where(usable, d, firsts)
    dist = np.zeros(log.shape)
    np.put_along_axis(dist, pick[..., None], 1.0, axis=-1)
    return dist


def run_task(task: ProgressiveTask, log: ReplayLog, progress: Progress | None = None) -> np.ndarray:
    """The target's distributions over the log (module-level: fan-out calls it)."""
    if task.transform is None:
        dist = builtin_distributions(log, task.spec)
        if dist is not None:
            if progress:
                progress(log.n)
            return dist
    events = log.events if task.transform is None else [task.transform(e) for e in log.events]
    target = make_target(task.spec)
    try:
        return target_distributions(log, target, events, progress)
    finally:
        target.close()


def run_targets(log: ReplayLog, tasks: Sequence[ProgressiveTask], workers: int | None = None,
                progress: Progress | None = None) -> list[np.ndarray]:
    """Distributions for every task, in order. Two or more VW tasks fan out
    (the context's :func:`simulator.fanout.current`: a spawned process pool by
    default, or Ray, where even one goes); cheap targets, a single VW task or
    ``workers=1`` run here, the cheap ones while the heavy ones run."""
    where = fanout.current()
    if workers is not None:
        where = fanout.FanOut(workers, where.ray, where.ray_address)
    heavy = [i for i, t in enumerate(tasks) if t.heavy]
    if not (where.uses_ray and heavy) and (where.processes == 1 or len(heavy) < 2):
        heavy = []
    out: dict[int, np.ndarray] = {}

    def here() -> None:
        for i, task in enumerate(tasks):
            if i not in heavy:
                out[i] = run_task(task, log, progress)

    def done(j: int, dist: np.ndarray) -> None:
        out[heavy[j]] = dist
        if progress:
            progress(log.n)

    fanout.fan_out(run_task, [tasks[i] for i in heavy], log, where=where, on_done=done, meanwhile=here)
    return [out[i] for i in range(len(tasks))]
