"""The decision loop without the wire: decide, log, join, learn.

The gRPC service is a thin translation over :class:`Engine`; tests and
embedding use the engine directly. Order of operations is the durability
contract: a decision or reward is appended to the event log before the caller
hears back, and joined examples are appended to the joined log before the
learner sees them, so a restart can rebuild everything from the two logs and
the latest model version.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from bandit.catalog import Catalog, Collection, candidate_set
from bandit.logformat.events import (
    ActivationEvent,
    DecisionEvent,
    JoinedEvent,
    LineRef,
    RewardEvent,
    UnservedEvent,
    dumps,
    event_line,
    event_to_record,
    joined_from_dsjson,
    joined_to_dsjson,
)
from bandit.features import FeatureGroup, SlotSpec
from bandit.decision import DecisionInput, Mode
from bandit.joiner import Joiner, JoinError, check_reward_value
from server.config import ServerConfig
from server.checkpoint import FILE_NAME as CHECKPOINT_FILE, read_checkpoint, write_checkpoint
from server.eventlog import WORKER_DIRS, AppendLog, Position, Tailer, Ticket, position_of, private_dir
from server.explain import Explanation, Explainer
from server.learner import LearnBacklog, LearnItem, RateMeter, SurfaceModel
from server.stats import Stats, SurfaceStats
from server.modelstore import ModelStore, VersionInfo, verify_vw_model

log = logging.getLogger(__name__)


class UnknownSurface(KeyError):
    def __str__(self) -> str:
        return f"unknown surface '{self.args[0]}'"


class AlreadyJoined(JoinError):
    """A decision id reused after its example was already joined."""


class CallerGone(RuntimeError):
    """The caller's deadline passed (or it cancelled) while its decision was
    made and logged: the decision is marked unserved and never learned."""


def caller_gone(event_id: str) -> CallerGone:
    return CallerGone(f"the deadline passed while event '{event_id}' was decided; it was not served "
                      "and will not be learned from (retry with the same event id, or a longer deadline)")


@dataclass(frozen=True)
class DecideCall:
    """A validated decide request in core types."""

    event_id: str
    surface: str
    context: tuple[FeatureGroup, ...]
    slots: tuple[SlotSpec, ...]
    # The request's own (each with its eligibility and window); empty: the catalog's.
    candidates: tuple[Collection, ...]
    mode: Mode | None
    deferred: bool
    at: float | None


class PendingFull(RuntimeError):
    """As many decisions waiting for their reward window as memory may hold."""


def check_pending(pending: int, limit: int, counts) -> None:
    """Refuse a new decision (counted in ``pending_refused``) while ``limit``
    decisions wait for their window: their memory has a ceiling."""
    if pending >= limit:
        counts["pending_refused"] += 1
        raise PendingFull(f"{pending} decisions are waiting for their reward window, at most {limit} "
                          "(limits.max_pending_decisions): retry later")


def lookup_surface(surfaces: dict, name: str):
    """The named surface; an empty name is the default one."""
    try:
        return surfaces[name or "default"]
    except KeyError:
        raise UnknownSurface(name) from None


def make_decision(call: DecideCall, event_id: str, surface, catalog: Catalog, now: float) -> DecisionEvent:
    """Candidates (the request's, else the catalog's), active and eligible per
    slot by the one rule (``candidate_set``), then the surface's serving
    policy decides; nothing is logged here."""
    at = call.at if call.at is not None else now
    if call.candidates:
        cset = candidate_set(call.candidates, [s.id for s in call.slots], at)
    else:
        cset = catalog.candidates_for(call.slots, at)
    inp = DecisionInput(call.context, call.slots, cset.candidates, cset.eligible)
    mode = call.mode or surface.mode
    policy = surface.serving
    decision = policy.decide(inp, event_id, mode)
    return DecisionEvent(event_id, now, surface.name, mode.value, policy.version, inp,
                         tuple(decision.choices), call.deferred)


@dataclass
class Logged:
    """A line submitted to the event log, what it does to memory once it is
    written (see Engine._settle), and why that failed, if it did."""

    ticket: Ticket
    apply: Callable[[Ticket], None]
    error: JoinError | None = None


def _let_others_run() -> None:
    """Between steps of a checkpoint's snapshot: give up the GIL, so decides
    waiting for it run (else each waits out the interpreter's 5 ms switch
    interval behind the checkpoint's Python; a decide beside a 200,000-decision
    checkpoint took 358 ms, ``bench.checkpoint_lock``)."""
    time.sleep(0)


JOINED_MARKS = 10_000  # per surface: joined-log positions a checkpoint can resume learning from
CLAIM_BYTES = 64 << 20  # claimed decisions not yet read from a worker's log: memory bound


class Engine:
    def __init__(self, config: ServerConfig, clock: Callable[[], float] = time.time):
        """Recovers from ``DATA/checkpoint.json`` and the logs' tails after it
        (everything, when there is no usable checkpoint), the decisions of
        serving workers' logs (``DATA/events/worker-*``) included, whatever
        topology wrote them."""
        self.config = config
        self.clock = clock
        self.checkpoint_seconds = config.join.checkpoint_seconds
        # Multi-process mode (set by the coordinator): follow the workers' logs,
        # and read their newest decisions before calling a reward's event
        # unknown (they were logged before the client saw them).
        self.follow_workers = False
        # Multi-process mode: the serving workers' own counters (requests they
        # rejected themselves), added to this engine's in ``totals``.
        self.peer_counts: Callable[[], Iterable[dict[str, int]]] | None = None
        data = private_dir(config.data_dir)
        self.catalog = Catalog(data / "catalog.json", config.limits.features)
        self.events = AppendLog(data / "events", "events", fsync=config.log.fsync,
                                segment_bytes=config.log.segment_bytes)
        self.worker_logs = Tailer(data / "events", WORKER_DIRS)  # serving workers' decisions
        self._own_log = Tailer(data, "events")  # this engine's log, read back at recovery
        self.checkpoint_path = data / CHECKPOINT_FILE
        self.joiner = self._new_joiner()
        self.surfaces: dict[str, SurfaceModel] = {}
        self.joined_logs: dict[str, AppendLog] = {}
        for name, sconf in config.surfaces.items():
            store = ModelStore(data / "models" / name, keep=config.learner.keep_versions)
            self.surfaces[name] = SurfaceModel(name, sconf.learning, Mode(sconf.mode), store, config.learner)
            self.joined_logs[name] = AppendLog(data / "joined" / name, "joined", ext="dsjson",
                                               fsync=config.log.fsync, segment_bytes=config.log.segment_bytes)
        # Per surface: joined lines written, and (lines, position after them) per join step.
        self._joined_lines = dict.fromkeys(self.joined_logs, 0)
        self._joined_marks: dict[str, deque[tuple[int, Position]]] = {
            name: deque(maxlen=JOINED_MARKS) for name in self.joined_logs}
        self.counts = {"decisions": 0, "rewards": 0, "activations": 0, "bad_requests": 0, "pending_refused": 0,
                       "explain_ablations": 0, "explains_truncated": 0}
        self.explainer = Explainer(config.limits.explain_max_features, config.limits.explain_max_concurrent)
        self.learner_errors = 0
        self.recovered_lines = 0  # log lines the last recovery read (a checkpoint bounds it)
        self._lock = threading.Lock()  # event log order == joiner order
        self._ingest_lock = threading.Lock()  # one reader of the workers' logs at a time
        self._checkpoint_lock = threading.Lock()
        # Lines submitted to the event log whose effect on memory waits for
        # their write (memory follows the disk), in log order: see _settle.
        self._inflight: deque[Logged] = deque()
        # Decisions submitted to the event log and not yet written: a repeat of
        # one waits for its write instead of answering from memory.
        self._unwritten: dict[str, tuple[DecisionEvent, Ticket]] = {}
        # Multi-process mode: event ids claimed by serving workers whose
        # decisions are not read from their logs yet (see claim).
        self._claims: OrderedDict[str, str] = OrderedDict()
        self._claims_bytes = 0
        self.backlog = LearnBacklog(config.learner.max_backlog_bytes, config.learner.queue_size)
        self.learn_rate = RateMeter()  # examples learned per second, the last 10 s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._recover(read_checkpoint(self.checkpoint_path))

    def _new_joiner(self) -> Joiner:
        join, learner = self.config.join, self.config.learner
        return Joiner(join.window_seconds, join.aggregation, join.default_reward,
                      sample_rate=learner.sample_rate, sample_seed=learner.sample_seed)

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        for target, name in ((self._join_loop, "joiner"), (self._learn_loop, "learner")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def drain(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Finish learning what was joined, publish it, close the logs."""
        self._stop.set()
        for thread in self._threads:
            if thread.name == "joiner":
                thread.join()
        self.backlog.close()
        for thread in self._threads:
            thread.join()
        for surface in self.surfaces.values():
            if surface.unpublished:
                surface.publish()
        self.checkpoint()
        self.events.close()
        for joined in self.joined_logs.values():
            joined.close()

    def _recover(self, checkpoint: dict | None) -> None:
        """Rebuild pending joins from the checkpoint and the event logs' tails
        after it (from their starts without one), and relearn the joined lines
        that the current model has not seen."""
        marks: dict = {}
        if checkpoint is not None:
            try:
                marks = self._resume(checkpoint)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                log.warning("checkpoint %s unusable (%r): reading the logs from their start", self.checkpoint_path, exc)
                self.joiner = self._new_joiner()
                self.worker_logs.seek({d: (0, 0) for d in self.worker_logs.positions()})
                self._own_log.seek({d: (0, 0) for d in self._own_log.positions()})
                marks = {}
        joined_ids: set[str] = set()
        for name in self.joined_logs:
            joined_ids |= self._recover_joined(name, marks.get(name))
        for jid in joined_ids:  # the checkpoint may hold some as pending: joined after it was written
            self.joiner.joined_already(jid)
        for record, ref in itertools.chain(self.worker_logs.follow(), self._own_log.follow()):
            if record.get("id") not in joined_ids and not self.joiner.is_closed(record.get("id")):
                self._replay(record, ref)
        self.recovered_lines += self.worker_logs.lines_read + self._own_log.lines_read
        if self.joiner:
            log.info("recovered %d pending decisions (%d log lines read)", len(self.joiner), self.recovered_lines)

    def _resume(self, checkpoint: dict) -> dict[str, tuple[int, Position]]:
        """Start from a checkpoint: the joiner's state and where each log was
        read to; returns per surface where learning can resume in its joined log."""
        data = Path(self.config.data_dir)
        positions = {data / rel: (int(at[0]), int(at[1])) for rel, at in checkpoint["events"].items()}
        own = positions.pop(data / "events")
        marks = {name: (int(m["lines"]), (int(m["at"][0]), int(m["at"][1])))
                 for name, m in checkpoint["joined"].items()}
        self.joiner.restore(checkpoint["joiner"])
        self.worker_logs.seek(positions)
        self._own_log.seek({data / "events": own})
        return marks

    def _recover_joined(self, name: str, mark: tuple[int, Position] | None) -> set[str]:
        """Relearn what the model has not seen of one joined log, read from
        ``mark`` (lines, position) when the model has seen that much; the ids
        read (joined, so never pending again)."""
        surface, jlog = self.surfaces[name], self.joined_logs[name]
        tail = Tailer(jlog.directory.parent, name, prefix="joined", ext="dsjson")
        index, seen = 0, surface.joined_through
        if mark is not None and mark[0] <= seen:
            tail.seek({jlog.directory: mark[1]})
            index = mark[0]
            self._joined_marks[name].append(mark)
        ids: set[str] = set()
        for obj, ref in tail.follow():
            if index == seen and index != (mark or (None,))[0]:
                self._joined_marks[name].append((index, position_of(ref)))
            ids.add(str(obj.get("EventId")))
            if index >= seen:
                self._relearn(surface, index, obj)
            index += 1
        self.recovered_lines += tail.lines_read
        self._joined_lines[name] = index
        self._joined_marks[name].append((index, jlog.end()))
        return ids

    def _replay(self, record: dict, ref: LineRef) -> None:
        """One event log record into the joiner (recovery)."""
        try:
            kind, event_id = record["kind"], record["id"]
            if kind == "decision":
                self.joiner.add_logged(record, ref)
            elif kind == "reward":
                self.joiner.add_reward(event_id, record["slot"], float(record["value"]), float(record["ts"]))
            elif kind == "activate":
                self.joiner.activate(event_id, float(record["ts"]))
            elif kind == "unserved":
                self.joiner.drop_unserved(event_id)
            else:
                log.warning("skipping event record of unknown kind %r", kind)
        except JoinError as exc:
            log.warning("recovery: %s", exc)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("skipping unreadable event record: %r", exc)

    def checkpoint(self) -> None:
        """Write DATA/checkpoint.json (see :mod:`server.checkpoint`): what a
        restart resumes from. Taken under the locks that order the logs and
        the joiner, so the positions and the pending state agree."""
        with self._checkpoint_lock:
            published = {name: s.store.current().joined_through for name, s in self.surfaces.items()}
            with self._ingest_lock, self._lock:
                own = self.events.barrier()
                self._settle()  # every line before ``own`` is in memory now
                workers = self.worker_logs.positions()
                captured = self.joiner.capture()  # the rest outside the lock every decide waits for
                marks = {name: list(m) for name, m in self._joined_marks.items()}
            snapshot = self.joiner.snapshot_of(captured, pause=_let_others_run)
            data = Path(self.config.data_dir)
            events = {str(path.relative_to(data)): list(at) for path, at in workers.items()}
            events["events"] = list(own)
            joined = {}
            for name, surface_marks in marks.items():
                usable = [m for m in surface_marks if m[0] <= published[name]]
                if usable:
                    lines, at = max(usable)
                    joined[name] = {"lines": lines, "at": list(at)}
            write_checkpoint(self.checkpoint_path, {"written_at": self.clock(), "events": events,
                                                    "joined": joined, "joiner": snapshot})

    def _relearn(self, surface: SurfaceModel, index: int, obj: dict) -> None:
        """A corrupt joined record is counted and skipped; it never stops the server."""
        try:
            joined = joined_from_dsjson(obj)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self.learner_errors += 1
            surface.skip()
            log.error("joined record %d of surface %s unreadable, skipped: %r", index, surface.name, exc)
            return
        try:
            surface.learn(joined, dumps(obj))
        except Exception as exc:
            self.learner_errors += 1
            log.error("joined record %d of surface %s not learned: %r", index, surface.name, exc)

    # --- serving --------------------------------------------------------------

    def surface(self, name: str) -> SurfaceModel:
        return lookup_surface(self.surfaces, name)

    def decide(self, call: DecideCall, wanted: Callable[[], bool] | None = None) -> DecisionEvent:
        """Decide and log; ``wanted`` tells, once the decision is logged,
        whether the caller can still receive it (CallerGone, and the decision
        marked unserved, when it cannot)."""
        surface = self.surface(call.surface)
        event_id = call.event_id or uuid.uuid4().hex
        found = self._lookup(event_id)
        if found is not None:
            return self._written(found)
        check_pending(len(self.joiner) + len(self._unwritten), self.config.limits.max_pending_decisions, self.counts)
        event = make_decision(call, event_id, surface, self.catalog, self.clock())
        line = event_line(event)
        with self._lock:
            found = self._lookup(event_id)
            if found is None:  # queued in log order; written by the first of its batch to wait
                logged = self._submit(line, lambda ticket: self._decided(event, line, ticket), locate=True)
                self._unwritten[event_id] = (event, logged.ticket)
        if found is not None:  # a concurrent call with the same id won
            return self._written(found)
        try:
            self._await(logged)  # durable before the caller (or a repeat) hears of it
        finally:
            with self._lock:
                del self._unwritten[event_id]
        if wanted is not None and not wanted():
            self.unserved(event_id)
            raise caller_gone(event_id)
        return event

    def _decided(self, event: DecisionEvent, line: str, ticket: Ticket) -> None:
        """A decision's line is written: pending by where it is (what a
        checkpoint names), and counted (under the lock)."""
        self.joiner.add_decision(event, line, self.events.where(ticket))
        self._count(event.surface, event.mode, [(c.model_top, c.action) for c in event.choices])

    def unserved(self, event_id: str) -> None:
        """Log that a just logged decision never reached its caller, then drop
        it from the joiner (memory follows the disk: if the marker cannot be
        written, the decision stays and is learned as served)."""
        marker = dumps(event_to_record(UnservedEvent(event_id, self.clock())))
        with self._lock:
            logged = self._submit(marker, lambda _: self.joiner.drop_unserved(event_id))
        try:
            self._await(logged)
        except OSError as exc:
            log.error("event '%s' could not be marked unserved: %r", event_id, exc)

    def drop_unserved(self, event_id: str) -> None:
        with self._lock:
            self.joiner.drop_unserved(event_id)

    def _submit(self, line: str, apply: Callable[[Ticket], None], locate: bool = False) -> "Logged":
        """Queue a line for the event log and what it does to memory once it
        is written (``apply``, under the lock; never if it is refused). Under
        the lock, so the log's order is the order memory changes in."""
        logged = Logged(self.events.submit(line, locate), apply)
        self._inflight.append(logged)
        return logged

    def _settle(self) -> None:
        """Apply every written line to memory, in log order, and drop the
        refused ones (under the lock). Memory follows the disk and its order:
        after a barrier, what memory holds is exactly what the log holds."""
        while self._inflight and self._inflight[0].ticket.done:
            logged = self._inflight.popleft()
            if logged.ticket.error is not None:
                continue
            try:
                logged.apply(logged.ticket)
            except JoinError as exc:  # e.g. its decision joined meanwhile: the caller hears of it
                logged.error = exc

    def _await(self, logged: "Logged") -> None:
        """Wait for a line's write, then settle: LogUnwritable if the disk
        refused it, or what kept it from memory (a JoinError). Never under the lock."""
        try:
            self.events.wait(logged.ticket)
        finally:
            with self._lock:
                self._settle()
        if logged.error is not None:
            raise logged.error

    def ingest(self, record: dict, line: str | LineRef) -> bool:
        """A decision logged by a serving worker process (multi-process mode):
        its record, and its line or where it is in the worker's log; False for
        a duplicate id (the first one logged wins)."""
        with self._lock:
            event_id = record["id"]
            self._unclaim(event_id)
            if event_id in self.joiner or self.joiner.is_closed(event_id):
                self.counts["duplicates"] = self.counts.get("duplicates", 0) + 1
                return False
            self.joiner.add_logged(record, line)
            self._count(record["surface"], record["mode"],
                        [(c.get("top", -1), c["a"]) for c in record["choices"]])
            return True

    def _count(self, surface_name: str, mode: str, tops_and_actions: list[tuple[int, int]]) -> None:
        """Counters for a logged decision (under the lock)."""
        self.counts["decisions"] += 1
        surface = self.surfaces.get(surface_name)
        if surface is None:
            return
        surface.counters.decisions += 1
        if mode == Mode.APPRENTICE.value:
            surface.counters.apprentice_decisions += len(tops_and_actions)
            surface.counters.apprentice_agreements += sum(top == a for top, a in tops_and_actions)

    def explain(self, event: DecisionEvent, top: int = 5) -> Explanation:
        return self.explainer.explain(self.surface(event.surface).serving, event, top)

    def claim(self, event_id: str, line: str) -> tuple[str, bool] | None:
        """Multi-process mode: this engine owns the callers' event ids. A
        serving worker claims one with the decision line it made, before
        logging it: None when the id is new (the line is its decision now);
        else the id's decision line and whether it is logged (pending here)
        or only claimed, by a worker that may still be writing it (or never
        will: it died, its disk was full), which the caller then writes
        itself. AlreadyJoined once it has joined; PendingFull for a new id at
        limits.max_pending_decisions. A claim lasts until its decision is read
        from a worker's log (bounded in bytes, oldest dropped first)."""
        with self._lock:
            known = self._known(event_id)
        if known is not None and not known[1]:  # perhaps logged since the logs were last read
            self.catch_up()
        with self._lock:
            known = self._known(event_id)
            if known is not None:
                return known
            check_pending(len(self.joiner) + len(self._claims), self.config.limits.max_pending_decisions,
                          self.counts)
            self._claims[event_id] = line
            self._claims_bytes += len(line)
            while self._claims_bytes > CLAIM_BYTES:
                self._claims_bytes -= len(self._claims.popitem(last=False)[1])
        return None

    def _known(self, event_id: str) -> tuple[str, bool] | None:
        """An id's pending (True) or claimed (False) decision line (under the lock)."""
        found = self._lookup(event_id)
        if found is not None:
            return event_line(found[0]), True
        claimed = self._claims.get(event_id)
        return None if claimed is None else (claimed, False)

    def _unclaim(self, event_id: str) -> None:
        """A claimed decision is read from its log: pending now (under the lock)."""
        line = self._claims.pop(event_id, None)
        if line is not None:
            self._claims_bytes -= len(line)

    def writable(self) -> bool:
        """Whether the event log takes writes; health says NOT_SERVING while
        it does not (a full disk), and SERVING again once a write or a probe
        succeeds."""
        return self.events.writable

    def totals(self) -> dict[str, int]:
        """Counters of everything served so far, every serving process included
        (multi-process mode: after reading the workers' newest decisions)."""
        if self.follow_workers:
            self.catch_up()
        totals = dict(self.counts)
        for peer in self.peer_counts() if self.peer_counts is not None else ():
            for name, value in peer.items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def stats(self) -> Stats:
        """One snapshot for GetStats and the metrics (see :mod:`server.stats`)."""
        counts, js, now = self.totals(), self.joiner.stats, self.clock()
        backlog_items, backlog_bytes = self.backlog.depth()
        surfaces = tuple(SurfaceStats(s.name, str(s.version), s.counters.decisions, s.examples_learned,
                                      s.counters.apprentice_decisions, s.counters.apprentice_agreements,
                                      max(0.0, now - s.last_learned_event_ts) if s.last_learned_event_ts else 0.0)
                         for s in self.surfaces.values())
        return Stats(decisions=counts["decisions"], rewards=counts["rewards"], activations=counts["activations"],
                     bad_requests=counts["bad_requests"], pending_refused=counts.get("pending_refused", 0),
                     explain_ablations=counts.get("explain_ablations", 0),
                     explains_truncated=counts.get("explains_truncated", 0), joined=js.joined, joined_with_reward=js.joined_with_reward,
                     default_reward_applied=js.default_reward_applied, unactivated_dropped=js.unactivated_dropped,
                     join_failed=js.failed, unserved_dropped=js.unserved_dropped,
                     rewards_rejected_unknown=js.rejected_unknown,
                     rewards_rejected_expired=js.rejected_expired, pending=self.pending(),
                     learner_errors=self.learner_errors, catalog_version=self.catalog.version, surfaces=surfaces,
                     learn_backlog_items=backlog_items, learn_backlog_bytes=backlog_bytes,
                     learn_backlog_limit_bytes=self.backlog.max_bytes, learn_subsampled=js.subsampled,
                     learner_events_per_second=self.learn_rate.rate())

    def _written(self, found: tuple[DecisionEvent, Ticket | None]) -> DecisionEvent:
        """Idempotency: a repeated id gets the original decision back, once it
        is in the log: a repeat of one being written waits for the write
        (LogUnwritable if it never got there). Never under the lock."""
        event, ticket = found
        if ticket is not None:
            self.events.wait(ticket)
        return event

    def _lookup(self, event_id: str) -> tuple[DecisionEvent, Ticket | None] | None:
        """A pending decision (ticket None), or one still being written with
        its ticket; AlreadyJoined for a joined one."""
        unwritten = self._unwritten.get(event_id)
        if unwritten is not None:
            return unwritten
        existing = self.joiner.get(event_id)
        if existing is None and self.joiner.is_closed(event_id):
            raise AlreadyJoined(f"event '{event_id}' was already decided and joined; use a new event id")
        return None if existing is None else (existing, None)

    def reward(self, event_id: str, slot_id: str, value: float, at: float | None = None,
               timeout: float | None = None) -> str:
        """Log and join a reward (a value in the reward range, at a time between
        its decision and now); returns the slot it joined. (``timeout``: the
        protocol's; nothing here waits on another process.)"""
        check_reward_value(value)
        now = self.clock()
        ts = now if at is None else at
        self._catch_up(event_id)
        with self._lock:
            k = self.joiner.check_reward(event_id, slot_id, now)
            if at is not None:
                self.joiner.check_time(event_id, at, now, "reward")
            slot = self.joiner.slot_id(event_id, k)
            record = dumps(event_to_record(RewardEvent(event_id, slot, value, ts)))
            logged = self._submit(record, lambda _: self._rewarded(event_id, slot, value, ts))
        self._await(logged)  # memory follows the disk: a reward not logged is not joined
        return slot

    def _rewarded(self, event_id: str, slot: str, value: float, ts: float) -> None:
        self.joiner.add_reward(event_id, slot, value, ts)
        self.counts["rewards"] += 1

    def activate(self, event_id: str, at: float | None = None, timeout: float | None = None) -> None:
        now = self.clock()
        ts = now if at is None else at
        self._catch_up(event_id)
        with self._lock:
            self.joiner.check_activation(event_id, now)
            if at is not None:
                self.joiner.check_time(event_id, at, now, "activation")
            record = dumps(event_to_record(ActivationEvent(event_id, ts)))
            logged = self._submit(record, lambda _: self._activated(event_id, ts))
        self._await(logged)  # memory follows the disk

    def _activated(self, event_id: str, ts: float) -> None:
        self.joiner.activate(event_id, ts)
        self.counts["activations"] += 1

    def catch_up(self) -> None:
        """Multi-process mode: read and ingest the workers' new decisions; one
        reader at a time, so a caller returns only after everything logged so
        far is ingested."""
        with self._ingest_lock:
            for record, where in self.worker_logs.poll():
                if record.get("kind") == "decision":
                    self.ingest(record, where)  # the line stays in the worker's log until it joins
                elif record.get("kind") == "unserved":
                    self.drop_unserved(record["id"])

    def _catch_up(self, event_id: str) -> None:
        if self.follow_workers and event_id not in self.joiner and not self.joiner.is_closed(event_id):
            self.catch_up()

    # --- joining and learning ---------------------------------------------------

    def join_now(self, now: float | None = None) -> int:
        """Close every decision whose window has passed (multi-process mode:
        those the workers logged until now included); returns how many joined."""
        if self.follow_workers:
            self.catch_up()
        at = self.clock() if now is None else now
        total = 0
        while (room := self.backlog.room()) > 0:  # else they wait, pending, for the learner
            with self._lock:
                self._settle()  # rewards and activations written so far count before their windows close
                closed = self.joiner.close_due(at, limit=room)
                self._write_joined(closed)
                more = self.joiner.has_due(at)
            total += len(closed)
            if not more:
                break
        return total

    def due(self, at: float) -> bool:
        """Whether decisions whose window closed by ``at`` are still pending
        (waiting for room in the learner's backlog)."""
        with self._lock:
            return self.joiner.has_due(at)

    def _write_joined(self, closed: list[JoinedEvent]) -> None:
        """Append closed decisions to their joined logs, then hand them to the
        learner (under the lock: the joined logs' order is the learning order)."""
        joined = [LearnItem(item.decision.surface, item.decision.mode, item.decision.timestamp, line)
                  for item in closed if (line := self._joined_line(item)) is not None]
        by_surface: dict[str, list[str]] = {}
        for item in joined:
            by_surface.setdefault(item.surface, []).append(item.line)
        for name, surface_lines in by_surface.items():
            self.joined_logs[name].append_many(surface_lines)
            self._joined_lines[name] += len(surface_lines)
            self._joined_marks[name].append((self._joined_lines[name], self.joined_logs[name].end()))
        self.backlog.put_many(joined)

    def _joined_line(self, item: JoinedEvent) -> str | None:
        """The joined log line of one closed decision, or None (counted and
        logged) when it cannot be written: the rest of its batch still is."""
        try:
            if item.decision.surface not in self.joined_logs:
                raise UnknownSurface(item.decision.surface)
            return dumps(joined_to_dsjson(item))
        except Exception as exc:  # noqa: BLE001 -- per item, whatever its fault
            self.joiner.stats.unwritten(item)
            log.error("event '%s' could not be written to the joined log, dropped: %r",
                      item.decision.event_id, exc)
            return None

    def _join_loop(self) -> None:
        checkpointed = time.monotonic()
        while not self._stop.wait(self.config.join.tick_seconds):
            try:
                self.join_now()
                if time.monotonic() - checkpointed >= self.checkpoint_seconds:
                    checkpointed = time.monotonic()
                    self.checkpoint()
            except Exception:  # keep serving; the fault is logged
                log.exception("join step failed")

    def _learn_loop(self) -> None:
        while True:
            item = self.backlog.get(timeout=self.config.join.tick_seconds)
            if item is None and self.backlog.closed:
                return
            try:
                if item is not None:
                    self.surfaces[item.surface].learn_line(item.mode, item.timestamp, item.line)
                    self.learn_rate.add()
                for surface in self.surfaces.values():
                    if surface.publish_due():
                        surface.publish()
            except Exception:
                self.learner_errors += 1
                log.exception("learning step failed; serving continues on the last good model")
            finally:
                if item is not None:
                    self.backlog.done()

    def wait_learned(self, timeout: float = 30.0) -> None:
        """Block until everything joined so far has been learned (tests, demo)."""
        if not self.backlog.wait(lambda: self.backlog.unfinished == 0, timeout):
            raise TimeoutError("learner did not catch up")

    def settle(self, ahead: float | None = None, timeout: float = 30.0) -> int:
        """Join every decision as if ``ahead`` seconds had passed (default: its
        whole reward window), learn all of it and publish a version: what the
        demo does once its audience has left, and tests before they look at a
        model. Returns how many decisions joined (each waits for room in the
        learner's backlog, as the join loop's do)."""
        at = self.clock() + (self.config.join.window_seconds if ahead is None else ahead)
        joined = self.join_now(now=at)
        while self.due(at):
            if not self.backlog.wait(lambda: self.backlog.room() > 0, timeout):
                raise TimeoutError("learner did not make room")
            joined += self.join_now(now=at)
        self.wait_learned(timeout)
        for surface in self.surfaces.values():
            surface.publish()
        return joined

    # --- admin ----------------------------------------------------------------

    def rollback(self, surface: str, version: int) -> VersionInfo:
        model = self.surface(surface)
        info = model.store.info(version)
        return model.install(model.store.path(version), "rollback", info.examples_learned)

    def import_model(self, surface: str, path: Path, sha256: str) -> VersionInfo:
        """Validated completely (see verify_vw_model and SurfaceModel.install)
        before anything is published: a refused model leaves CURRENT as it was."""
        model = self.surface(surface)
        verify_vw_model(path, sha256, model.serving.arguments)
        return model.install(path, "imported", 0)

    def pending(self) -> int:
        with self._lock:
            return len(self.joiner)
