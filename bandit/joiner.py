"""The reward joiner: turns decisions and the rewards that arrive later into
one joined example per decision.

A decision waits for its reward window (from the decision, or from its
activation when it was deferred). Rewards name the event id and, when the
decision filled several slots, the slot. When the window closes the rewards
per slot are aggregated (sum by default), slots without any reward get the
default reward, and the joined event is emitted. A deferred decision never
activated within its window is dropped and counted: it was never shown.

Pure and single-threaded: the server calls it under its own lock, the
simulator directly. Time is passed in, never read, so replays are exact.

Rewards live in :data:`REWARD_RANGE`. Callers check a value at the door
(:func:`check_reward_value`); aggregates are clipped into the range, so no
sum of in-range (or old, unchecked) observations can overflow what VW learns
as a float32 cost. One bad item never takes down a join batch: it is counted
(``stats.failed``), logged, and the others close.

Subsampling (``sample_rate`` < 1): a closed decision is kept with that
probability, drawn from a hash of its event id and ``sample_seed`` (so a
decision joined again after a restart is kept or left out the same way), and
a kept one carries ``pdrop = 1 - sample_rate`` (VW's DSJSON field: learning
weights it by 1 / (1 - pdrop)). A left-out decision is counted
(``stats.subsampled``) and never read back from its log.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Callable, Iterable, NamedTuple

from bandit.logformat.events import DecisionEvent, JoinedEvent, LineRef, dumps, event_from_record, event_to_record

log = logging.getLogger(__name__)

# Clicks (0/1), add-to-carts and order revenue (in currency units, even in
# minor ones for a large basket) all fit; float32 (VW's cost type) represents
# every integer in it exactly and its squares are far from overflow.
REWARD_RANGE = (-1e6, 1e6)
# How far a client's clock may run ahead of the server's for an ``at``.
MAX_CLOCK_SKEW_SECONDS = 300.0

AGGREGATIONS: dict[str, Callable[[list[tuple[float, float]]], float]] = {
    "sum": lambda obs: sum(v for _, v in obs),
    "earliest": lambda obs: min(obs)[1],
    "max": lambda obs: max(v for _, v in obs),
    "mean": lambda obs: sum(v for _, v in obs) / len(obs),
}


class JoinError(ValueError):
    """A reward or activation that cannot be joined."""


class UnknownEvent(JoinError):
    pass


class ExpiredEvent(JoinError):
    pass


class UnknownSlot(JoinError):
    pass


class InvalidTime(JoinError):
    """A reward or activation time before its decision or in the future."""


class RewardOutOfRange(ValueError):
    """A reward value outside :data:`REWARD_RANGE`."""


def check_reward_value(value: float) -> float:
    """The value if it is a finite number inside the reward range."""
    low, high = REWARD_RANGE
    if not low <= value <= high:  # NaN fails too
        raise RewardOutOfRange(f"reward value {value!r} is outside the reward range [{low:g}, {high:g}]")
    return value


def clip_reward(value: float) -> float:
    """An aggregate forced into the reward range (inf from an overflowing sum
    included); NaN has no place in it and is refused."""
    if math.isnan(value):
        raise RewardOutOfRange("aggregated reward is NaN")
    low, high = REWARD_RANGE
    return min(max(value, low), high)


@dataclass
class JoinStats:
    joined: int = 0
    joined_with_reward: int = 0
    default_reward_applied: int = 0  # slots
    unactivated_dropped: int = 0
    rejected_unknown: int = 0
    rejected_expired: int = 0
    failed: int = 0  # decisions that could not be joined (unreadable line, bad data); logged
    unserved_dropped: int = 0  # decisions whose caller never received them: not learned
    subsampled: int = 0  # joined decisions left out of the joined log by sample_rate

    def unwritten(self, joined: JoinedEvent) -> None:
        """A joined event its writer could not write after all: failed, not joined."""
        self.joined -= 1
        self.joined_with_reward -= any(joined.observed)
        self.default_reward_applied -= joined.observed.count(False)
        self.failed += 1


class _Pending(NamedTuple):
    """A decision waiting for its window. A served decision is kept as its log
    line (one string, not a thousand objects the garbage collector would walk
    on every pass while the window is open) and rebuilt when it joins.

    A tuple, never changed: a reward or an activation replaces the record. So a checkpoint's capture, under the lock every
    decide waits for, is a copy of one dict made in C, whatever changes
    after it (copying each record's changing parts took 331 ms at 200,000
    pending decisions, ``bench.checkpoint_lock``). Stored as a plain tuple
    (see :class:`_Records`)."""

    slot_ids: tuple[str, ...]
    decided_at: float
    deferred: bool
    deadline: float
    activated: bool
    rewards: tuple[tuple[tuple[float, float], ...], ...]  # per slot: (time, value) observations
    decision: DecisionEvent | None = None
    line: str | LineRef | None = None  # LineRef: another process's log holds the line

    def event(self) -> DecisionEvent:
        if self.decision is not None:
            return self.decision
        line = self.line if isinstance(self.line, str) else self.line.read()
        event = event_from_record(json.loads(line))
        assert isinstance(event, DecisionEvent)
        return event


def _view(raw: tuple) -> _Pending:
    line = raw[-1]
    if type(line) is tuple:  # a located line, kept as a plain tuple
        return _Pending(*raw[:-1], LineRef._make(line))
    return _Pending._make(raw)


# Each field of a stored record (a plain tuple in _Pending's field order).
_FIELD = {name: itemgetter(i) for i, name in enumerate(_Pending._fields)}


class _Records(dict):
    """Pending records by event id. Stored as plain tuples (a located line
    too), read as :class:`_Pending`: the garbage collector stops tracking a
    plain tuple of atoms, not a NamedTuple, so 200,000 pending decisions add
    nothing to its full collections (as dataclasses, 6 tracked objects each:
    a full collection 102 ms at 200,000, 9.6 ms now, ``bench.checkpoint_lock``).
    ``dict(records)`` copies the stored tuples."""

    def __setitem__(self, event_id: str, record: _Pending) -> None:
        if type(record.line) is LineRef:
            record = record._replace(line=tuple(record.line))
        dict.__setitem__(self, event_id, tuple(record))

    def __getitem__(self, event_id: str) -> _Pending:
        return _view(dict.__getitem__(self, event_id))

    def get(self, event_id: str) -> _Pending | None:
        raw = dict.get(self, event_id)
        return None if raw is None else _view(raw)

    def pop(self, event_id: str, _none: None = None) -> _Pending | None:
        """The record, removed; None if there is none (``pop(id, None)`` as on a dict)."""
        raw = dict.pop(self, event_id, None)
        return None if raw is None else _view(raw)


# Joiner.capture: the stored pending records by id (plain tuples, never changed), the ids closed lately.
Captured = tuple[dict[str, tuple], list[str]]
# Records per step of a snapshot: between steps its builder lets decides run.
SNAPSHOT_STEP = 10_000
# A snapshot's columns after "ids", in the order restore reads them.
SNAPSHOT_COLUMNS = ("slot_set", "ts", "deferred", "activated", "opened", "path", "offset", "length")


def kept(event_id: str, sample_rate: float, seed: int = 0) -> bool:
    """Whether subsampling at ``sample_rate`` keeps this decision: a uniform
    draw from a hash of the seed and the id, independent of the decision's
    content and rewards (what makes the 1 / (1 - pdrop) weights unbiased)."""
    if sample_rate >= 1.0:
        return True
    digest = hashlib.blake2b(f"{seed}:{event_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < sample_rate


class Joiner:
    def __init__(self, window_seconds: float, aggregation: str = "sum", default_reward: float = 0.0,
                 remember_closed: int = 200_000, sample_rate: float = 1.0, sample_seed: int = 0):
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation '{aggregation}' is not one of {', '.join(AGGREGATIONS)}")
        if window_seconds <= 0:
            raise ValueError("reward window must be positive")
        check_reward_value(default_reward)
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample rate {sample_rate!r} is not in (0, 1]")
        self.sample_rate, self.sample_seed = sample_rate, sample_seed
        self.window = window_seconds
        self.aggregate = AGGREGATIONS[aggregation]
        self.default_reward = default_reward
        self.stats = JoinStats()
        self._pending = _Records()
        self._deadlines: list[tuple[float, str]] = []  # heap; stale entries skipped
        # Ids of closed events (bounded), to tell "expired" from "unknown".
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_closed

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._pending

    def get(self, event_id: str) -> DecisionEvent | None:
        pending = self._pending.get(event_id)
        return pending.event() if pending else None

    def slot_id(self, event_id: str, k: int) -> str:
        return self._pending[event_id].slot_ids[k]

    def is_closed(self, event_id: str) -> bool:
        return event_id in self._closed

    def add_decision(self, decision: DecisionEvent, line: str | None = None, ref: LineRef | None = None) -> None:
        """Wait for the decision's rewards; with its log ``line`` only that is
        kept, with ``ref`` (where the line is written) only that."""
        self._add(decision.event_id, decision.timestamp, tuple(s.id for s in decision.inp.slots),
                  decision.deferred, None if line or ref else decision, ref or line)

    def add_logged(self, record: dict, line: str | LineRef) -> None:
        """A decision known by its log record (recovery, other processes' logs);
        ``line`` is its text or where to read it."""
        self._add(record["id"], float(record["ts"]), tuple(s["id"] for s in record["slots"]),
                  bool(record.get("deferred", False)), None, line)

    def _add(self, event_id: str, timestamp: float, slot_ids: tuple[str, ...], deferred: bool,
             decision: DecisionEvent | None, line: str | LineRef | None) -> None:
        if event_id in self._pending or event_id in self._closed:
            raise JoinError(f"event '{event_id}' was already decided")
        deadline = timestamp + self.window
        self._pending[event_id] = _Pending(slot_ids, timestamp, deferred, deadline, not deferred,
                                           ((),) * len(slot_ids), decision, line)
        heapq.heappush(self._deadlines, (deadline, event_id))

    def drop_unserved(self, event_id: str) -> bool:
        """A pending decision its caller never received (deadline passed while
        deciding) is dropped and counted: learning it would teach the model
        that it was shown and not clicked. Its id is not remembered, so a
        retry with it is decided afresh. False if it was not pending."""
        if self._pending.pop(event_id, None) is None:
            return False
        self.stats.unserved_dropped += 1
        return True

    def check_reward(self, event_id: str, slot_id: str, now: float | None = None) -> int:
        """The slot index a reward would join, or the reason it cannot. With
        ``now``, a decision whose window has passed is expired even if it is
        not closed yet (its join may wait for room in the learner's backlog):
        what joins never depends on when the join ran."""
        pending = self._pending.get(event_id)
        if pending is None or (now is not None and now > pending.deadline):
            if pending is not None or event_id in self._closed:
                self.stats.rejected_expired += 1
                raise ExpiredEvent(f"event '{event_id}' is past its reward window")
            self.stats.rejected_unknown += 1
            raise UnknownEvent(f"event '{event_id}' is unknown")
        slots = pending.slot_ids
        if not slot_id:
            if len(slots) > 1:
                raise UnknownSlot(f"event '{event_id}' filled {len(slots)} slots: name the slot_id")
            return 0
        try:
            return slots.index(slot_id)
        except ValueError:
            raise UnknownSlot(
                f"event '{event_id}' has no slot '{slot_id}' (slots: {', '.join(slots)})"
            ) from None

    def check_time(self, event_id: str, at: float, now: float, what: str) -> None:
        """A client-given time of a reward or activation of a pending event must
        lie between its decision and (allowing for clock skew) now."""
        pending = self._pending.get(event_id)
        if pending is None:
            raise UnknownEvent(f"event '{event_id}' is unknown")
        if not math.isfinite(at) or at < pending.decided_at:
            raise InvalidTime(f"{what} time {at!r} of event '{event_id}' is before its decision "
                              f"({pending.decided_at!r}); omit 'at' to use the server's clock")
        if at > now + MAX_CLOCK_SKEW_SECONDS:
            raise InvalidTime(f"{what} time {at!r} of event '{event_id}' is in the future (server time {now!r}, "
                              f"{MAX_CLOCK_SKEW_SECONDS:g} s of clock skew allowed)")

    def add_reward(self, event_id: str, slot_id: str, value: float, timestamp: float) -> None:
        k = self.check_reward(event_id, slot_id)
        pending = self._pending[event_id]
        rewards = list(pending.rewards)
        rewards[k] += ((timestamp, value),)
        self._pending[event_id] = pending._replace(rewards=tuple(rewards))

    def check_activation(self, event_id: str, now: float | None = None) -> None:
        """Whether the decision can be activated (with ``now``: its window, the
        activation's, has not passed; see :meth:`check_reward`)."""
        pending = self._pending.get(event_id)
        if pending is None or (now is not None and now > pending.deadline):
            if pending is not None or event_id in self._closed:
                raise ExpiredEvent(f"event '{event_id}' is past its activation window")
            raise UnknownEvent(f"event '{event_id}' is unknown")
        if not pending.deferred:
            raise JoinError(f"event '{event_id}' was not decided with deferred_activation")

    def activate(self, event_id: str, timestamp: float) -> None:
        """Activation restarts the reward window: an email's clicks come after it
        is sent (never before it was decided, whatever an old log says)."""
        self.check_activation(event_id)
        pending = self._pending[event_id]
        if not pending.activated:
            deadline = max(pending.decided_at, timestamp) + self.window
            if deadline > pending.deadline:  # else its deadline is already in the heap
                heapq.heappush(self._deadlines, (deadline, event_id))
            self._pending[event_id] = pending._replace(activated=True, deadline=max(deadline, pending.deadline))

    def close_due(self, now: float, limit: int | None = None) -> list[JoinedEvent]:
        """Emit every decision whose window has closed (at most ``limit`` of
        them: the rest stay pending for the next call), oldest first."""
        due: dict[str, None] = {}  # ordered, and each id once
        while self._deadlines and self._deadlines[0][0] <= now and (limit is None or len(due) < limit):
            deadline, eid = heapq.heappop(self._deadlines)
            pending = self._pending.get(eid)
            if pending is not None and pending.deadline == deadline:
                due[eid] = None
        return list(self._close(due))

    def has_due(self, now: float) -> bool:
        """Whether a decision's window has closed by ``now`` (stale deadline
        entries are dropped on the way)."""
        while self._deadlines:
            deadline, eid = self._deadlines[0]
            pending = self._pending.get(eid)
            if pending is not None and pending.deadline == deadline:
                return deadline <= now
            heapq.heappop(self._deadlines)
        return False

    def close_all(self) -> list[JoinedEvent]:
        self._deadlines.clear()
        return list(self._close(sorted(self._pending, key=lambda eid: self._pending[eid].deadline)))

    def _close(self, event_ids: Iterable[str]) -> Iterable[JoinedEvent]:
        for eid in event_ids:
            pending = self._pending.pop(eid, None)
            if pending is None:
                continue
            self.remember_closed(eid)
            if not pending.activated:
                self.stats.unactivated_dropped += 1
                continue
            if not kept(eid, self.sample_rate, self.sample_seed):
                self.stats.subsampled += 1
                continue
            try:
                joined = self._joined(pending)
            except Exception as exc:  # noqa: BLE001 -- one bad item, whatever its fault, never takes down the batch
                self.stats.failed += 1
                log.error("event '%s' could not be joined, dropped: %r", eid, exc)
                continue
            yield joined

    def _joined(self, pending: _Pending) -> JoinedEvent:
        rewards, observed = [], []
        for obs in pending.rewards:
            observed.append(bool(obs))
            rewards.append(clip_reward(self.aggregate(sorted(obs))) if obs else self.default_reward)
        event = pending.event()
        self.stats.joined += 1
        self.stats.joined_with_reward += any(observed)
        self.stats.default_reward_applied += observed.count(False)
        observations = tuple(tuple(v for _, v in sorted(obs)) for obs in pending.rewards)
        joined = JoinedEvent(event, tuple(rewards), tuple(observed), observations)
        return replace(joined, pdrop=1.0 - self.sample_rate) if self.sample_rate < 1.0 else joined

    def snapshot(self) -> dict:
        """Everything pending and the ids closed lately, as JSON-ready values
        (a checkpoint): each decision by where its line is (or the line itself
        while it is not written yet), with its rewards and activation."""
        return self.snapshot_of(self.capture())

    def capture(self) -> "Captured":
        """What :meth:`snapshot_of` makes a snapshot of: a copy of the pending
        records (which are replaced, never changed) and of the closed ids, two
        C-level copies. The caller holds the lock that keeps the joiner
        consistent with the log positions it checkpoints, and every decide
        waits for that lock."""
        return dict(self._pending), list(self._closed)

    def snapshot_of(self, captured: "Captured", pause: Callable[[], None] | None = None) -> dict:
        """:meth:`snapshot` from a :meth:`capture` (no lock needed), as columns
        (one list per field, built a column at a time: a dict per decision
        cost 800 ms of Python at 200,000 pending). ``pause`` is called between
        steps of :data:`SNAPSHOT_STEP` records, so a server's decides are not
        kept from the GIL while it is built."""
        pending, closed = captured
        records = list(pending.values())
        paths: dict[str, int] = {}
        slot_sets: dict[tuple[str, ...], int] = {}
        columns: dict[str, list] = {name: [] for name in SNAPSHOT_COLUMNS}
        lines, rewards = {}, {}
        for start in range(0, len(records), SNAPSHOT_STEP):
            step = records[start:start + SNAPSHOT_STEP]
            self._snapshot_step(step, start, columns, paths, slot_sets, lines, rewards)
            if pause is not None:
                pause()
        return {"ids": list(pending), **columns, "paths": list(paths),
                "slot_sets": [list(s) for s in slot_sets], "lines": lines, "rewards": rewards, "closed": closed}

    def _snapshot_step(self, step: list[tuple], start: int, columns: dict[str, list], paths: dict[str, int],
                       slot_sets: dict[tuple[str, ...], int], lines: dict[str, str], rewards: dict[str, list]) -> None:
        window = self.window
        columns["slot_set"] += [slot_sets.setdefault(s, len(slot_sets)) for s in map(_FIELD["slot_ids"], step)]
        columns["ts"] += map(_FIELD["decided_at"], step)
        columns["deferred"] += map(_FIELD["deferred"], step)
        columns["activated"] += map(_FIELD["activated"], step)
        columns["opened"] += [d - window for d in map(_FIELD["deadline"], step)]
        refs = list(map(_FIELD["line"], step))  # located: (path, offset, length)
        columns["path"] += [paths.setdefault(r[0], len(paths)) if type(r) is tuple else -1 for r in refs]
        columns["offset"] += [r[1] if type(r) is tuple else -1 for r in refs]
        columns["length"] += [r[2] if type(r) is tuple else -1 for r in refs]
        for i, line in enumerate(refs, start):
            if type(line) is not tuple:  # not written yet, or kept as its event (the simulator)
                lines[str(i)] = line if line is not None else dumps(event_to_record(_view(step[i - start]).event()))
        for i, observed in enumerate(map(_FIELD["rewards"], step), start):
            if any(observed):
                rewards[str(i)] = observed  # tuples: arrays in JSON

    def restore(self, snapshot: dict) -> None:
        """Resume from :meth:`snapshot` (before anything else is added); a
        snapshot of the earlier form (one object per decision) is read too."""
        for eid in snapshot["closed"]:
            self.remember_closed(eid)
        items = self._columns_items(snapshot) if "ids" in snapshot else snapshot["pending"]
        for item in items:
            ref = item.get("ref")
            line = LineRef(str(ref[0]), int(ref[1]), int(ref[2])) if ref else item["line"]
            deadline = float(item["opened"]) + self.window
            rewards = tuple(tuple((float(t), float(v)) for t, v in obs) for obs in item["rewards"])
            self._pending[item["id"]] = _Pending(
                tuple(item["slots"]), float(item["ts"]), bool(item["deferred"]), deadline, bool(item["activated"]),
                rewards, None, line)
            heapq.heappush(self._deadlines, (deadline, item["id"]))

    @staticmethod
    def _columns_items(snapshot: dict) -> Iterable[dict]:
        """The columns of a snapshot as one item per decision."""
        paths, slot_sets = snapshot["paths"], snapshot["slot_sets"]
        lines, rewards = snapshot["lines"], snapshot["rewards"]
        rows = zip(snapshot["ids"], *(snapshot[name] for name in SNAPSHOT_COLUMNS))
        for i, (eid, slot_set, ts, deferred, activated, opened, path, offset, length) in enumerate(rows):
            slots = slot_sets[slot_set]
            item = {"id": eid, "slots": slots, "ts": ts, "deferred": deferred, "activated": activated,
                    "opened": opened, "rewards": rewards.get(str(i)) or [[] for _ in slots]}
            if path >= 0:
                item["ref"] = [paths[path], offset, length]
            else:
                item["line"] = lines[str(i)]
            yield item

    def joined_already(self, event_id: str) -> None:
        """The event is in a joined log (a restart found it there): closed,
        and no longer pending even if the checkpoint restored it so (a join
        step wrote it after that checkpoint); joining it again would learn it
        twice."""
        self._pending.pop(event_id, None)  # its deadline's heap entry is skipped as stale
        self.remember_closed(event_id)

    def remember_closed(self, event_id: str) -> None:
        self._closed[event_id] = None
        if len(self._closed) > self._remember:
            self._closed.popitem(last=False)
