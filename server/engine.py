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
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from bandit.catalog import Catalog
from bandit.logformat.events import (
    ActivationEvent,
    DecisionEvent,
    JoinedEvent,
    LineRef,
    RewardEvent,
    UnservedEvent,
    dumps,
    event_from_record,
    event_line,
    event_to_record,
    joined_from_dsjson,
    joined_to_dsjson,
)
from bandit.features import Candidate, FeatureGroup, SlotSpec
from bandit.decision import DecisionInput, Mode
from bandit.joiner import Joiner, JoinError, check_reward_value
from server.config import ServerConfig
from server.eventlog import AppendLog, Ticket, private_dir, read_log_dir
from server.explain import Explanation, Explainer
from server.learner import SurfaceModel
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
    candidates: tuple[Candidate, ...]
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
    """Candidates (the request's, else the catalog's active and eligible ones),
    then the surface's serving policy decides; nothing is logged here."""
    candidates, eligible = call.candidates, ()
    if not candidates:
        cset = catalog.candidates_for(call.slots, call.at if call.at is not None else now)
        candidates, eligible = cset.candidates, cset.eligible
    inp = DecisionInput(call.context, call.slots, candidates, eligible)
    mode = call.mode or surface.mode
    policy = surface.serving
    decision = policy.decide(inp, event_id, mode)
    return DecisionEvent(event_id, now, surface.name, mode.value, policy.version, inp,
                         tuple(decision.choices), call.deferred)


class Engine:
    def __init__(self, config: ServerConfig, clock: Callable[[], float] = time.time,
                 decision_dirs: Sequence[Path] = ()):
        """``decision_dirs``: event logs of serving worker processes (multi-process
        mode), whose decisions this engine joins and learns from."""
        self.config = config
        self.clock = clock
        self.decision_dirs = [Path(d) for d in decision_dirs]
        # Multi-process mode: read the workers' newest decisions before calling
        # a reward's event unknown (they were logged before the client saw them).
        self.catch_up: Callable[[], None] | None = None
        # Multi-process mode: the serving workers' own counters (requests they
        # rejected themselves), added to this engine's in ``totals``.
        self.peer_counts: Callable[[], Iterable[dict[str, int]]] | None = None
        data = private_dir(config.data_dir)
        self.catalog = Catalog(data / "catalog.json", config.limits.features)
        self.events = AppendLog(data / "events", "events", fsync=config.log.fsync,
                                segment_bytes=config.log.segment_bytes)
        self.joiner = Joiner(config.join.window_seconds, config.join.aggregation, config.join.default_reward)
        self.surfaces: dict[str, SurfaceModel] = {}
        self.joined_logs: dict[str, AppendLog] = {}
        for name, sconf in config.surfaces.items():
            store = ModelStore(data / "models" / name, keep=config.learner.keep_versions)
            self.surfaces[name] = SurfaceModel(name, sconf.learning, Mode(sconf.mode), store, config.learner)
            self.joined_logs[name] = AppendLog(data / "joined" / name, "joined", ext="dsjson",
                                               fsync=config.log.fsync, segment_bytes=config.log.segment_bytes)
        self.counts = {"decisions": 0, "rewards": 0, "activations": 0, "bad_requests": 0, "pending_refused": 0,
                       "explain_ablations": 0, "explains_truncated": 0}
        self.explainer = Explainer(config.limits.explain_max_features, config.limits.explain_max_concurrent)
        self.learner_errors = 0
        self._lock = threading.Lock()  # event log order == joiner order
        # Decisions submitted to the event log and not yet written: a repeat of
        # one waits for its write instead of answering from memory.
        self._unwritten: dict[str, tuple[DecisionEvent, Ticket]] = {}
        self._learn_queue: queue.Queue[tuple[str, JoinedEvent, str] | None] = queue.Queue(config.learner.queue_size)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._recover()

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
        self._learn_queue.put(None)
        for thread in self._threads:
            thread.join()
        for surface in self.surfaces.values():
            if surface.unpublished:
                surface.publish()
        self.events.close()
        for joined in self.joined_logs.values():
            joined.close()

    def _recover(self) -> None:
        """Rebuild pending joins from the event log and relearn joined lines
        that the current model has not seen."""
        joined_ids: set[str] = set()
        for name, jlog in self.joined_logs.items():
            surface = self.surfaces[name]
            for index, obj in enumerate(jlog.read()):
                joined_ids.add(str(obj.get("EventId")))
                if index >= surface.joined_through:
                    self._relearn(surface, index, obj)
        worker_records = (rec for d in self.decision_dirs for rec in read_log_dir(d))
        for rec in itertools.chain(worker_records, self.events.read()):
            try:
                event = event_from_record(rec)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("skipping unreadable event record: %r", exc)
                continue
            if event.event_id in joined_ids:
                continue
            try:
                if isinstance(event, DecisionEvent):
                    self.joiner.add_decision(event, dumps(rec))
                elif isinstance(event, RewardEvent):
                    self.joiner.add_reward(event.event_id, event.slot_id, event.value, event.timestamp)
                elif isinstance(event, UnservedEvent):
                    self.joiner.drop_unserved(event.event_id)
                else:
                    self.joiner.activate(event.event_id, event.timestamp)
            except JoinError as exc:
                log.warning("recovery: %s", exc)
        for jid in joined_ids:
            self.joiner.remember_closed(jid)
        if self.joiner:
            log.info("recovered %d pending decisions", len(self.joiner))

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
            if found is None:
                ticket = self.events.submit(line)  # queued in log order; written by the log's writer
                self._unwritten[event_id] = (event, ticket)
        if found is not None:  # a concurrent call with the same id won
            return self._written(found)
        try:
            self.events.wait(ticket)  # durable before the caller (or a repeat) hears of it
        finally:
            with self._lock:  # memory follows the disk: a decision not logged is not kept
                del self._unwritten[event_id]
                if ticket.error is None:
                    self.joiner.add_decision(event, line)
                    self._count(event.surface, event.mode, [(c.model_top, c.action) for c in event.choices])
        if wanted is not None and not wanted():
            self.unserved(event_id)
            raise caller_gone(event_id)
        return event

    def unserved(self, event_id: str) -> None:
        """Log that a just logged decision never reached its caller, then drop
        it from the joiner (memory follows the disk: if the marker cannot be
        written, the decision stays and is learned as served)."""
        marker = dumps(event_to_record(UnservedEvent(event_id, self.clock())))
        try:
            self.events.wait(self.events.submit(marker))
        except OSError as exc:
            log.error("event '%s' could not be marked unserved: %r", event_id, exc)
            return
        self.drop_unserved(event_id)

    def drop_unserved(self, event_id: str) -> None:
        with self._lock:
            self.joiner.drop_unserved(event_id)

    def ingest(self, record: dict, line: str | LineRef) -> bool:
        """A decision logged by a serving worker process (multi-process mode):
        its record, and its line or where it is in the worker's log; False for
        a duplicate id (the first one logged wins)."""
        with self._lock:
            event_id = record["id"]
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

    def check_repeat(self, event_id: str) -> None:
        """AlreadyJoined when a repeated event id's decision was already joined.

        Multi-process mode: a serving worker remembers its recent decisions
        for idempotent repeats, but only this engine knows whether one has
        joined since; the worker asks on a repeat (never on a new id)."""
        self._catch_up(event_id)
        with self._lock:
            self._lookup(event_id)

    def writable(self) -> bool:
        """Whether the event log takes writes; health says NOT_SERVING while
        it does not (a full disk), and SERVING again once a write or a probe
        succeeds."""
        return self.events.writable

    def totals(self) -> dict[str, int]:
        """Counters of everything served so far, every serving process included
        (multi-process mode: after reading the workers' newest decisions)."""
        if self.catch_up is not None:
            self.catch_up()
        totals = dict(self.counts)
        for peer in self.peer_counts() if self.peer_counts is not None else ():
            for name, value in peer.items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def stats(self) -> Stats:
        """One snapshot for GetStats and the metrics (see :mod:`server.stats`)."""
        counts, js, now = self.totals(), self.joiner.stats, self.clock()
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
                     learner_errors=self.learner_errors, catalog_version=self.catalog.version, surfaces=surfaces)

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

    def reward(self, event_id: str, slot_id: str, value: float, at: float | None = None) -> str:
        """Log and join a reward (a value in the reward range, at a time between
        its decision and now); returns the slot it joined."""
        check_reward_value(value)
        now = self.clock()
        ts = now if at is None else at
        self._catch_up(event_id)
        with self._lock:
            k = self.joiner.check_reward(event_id, slot_id)
            if at is not None:
                self.joiner.check_time(event_id, at, now, "reward")
            slot = self.joiner.slot_id(event_id, k)
            ticket = self.events.submit(dumps(event_to_record(RewardEvent(event_id, slot, value, ts))))
        self.events.wait(ticket)  # memory follows the disk: a reward not logged is not joined
        with self._lock:
            self.joiner.add_reward(event_id, slot, value, ts)
            self.counts["rewards"] += 1
        return slot

    def activate(self, event_id: str, at: float | None = None) -> None:
        now = self.clock()
        ts = now if at is None else at
        self._catch_up(event_id)
        with self._lock:
            self.joiner.check_activation(event_id)
            if at is not None:
                self.joiner.check_time(event_id, at, now, "activation")
            ticket = self.events.submit(dumps(event_to_record(ActivationEvent(event_id, ts))))
        self.events.wait(ticket)  # memory follows the disk
        with self._lock:
            self.joiner.activate(event_id, ts)
            self.counts["activations"] += 1

    def _catch_up(self, event_id: str) -> None:
        if self.catch_up is not None and event_id not in self.joiner and not self.joiner.is_closed(event_id):
            self.catch_up()

    # --- joining and learning ---------------------------------------------------

    def join_now(self, now: float | None = None) -> int:
        """Close every decision whose window has passed (multi-process mode:
        those the workers logged until now included); returns how many joined."""
        if self.catch_up is not None:
            self.catch_up()
        with self._lock:
            joined = [(item, line) for item in self.joiner.close_due(self.clock() if now is None else now)
                      if (line := self._joined_line(item)) is not None]
            by_surface: dict[str, list[str]] = {}
            for item, line in joined:
                by_surface.setdefault(item.decision.surface, []).append(line)
            for name, surface_lines in by_surface.items():
                self.joined_logs[name].append_many(surface_lines)
        for item, line in joined:
            self._learn_queue.put((item.decision.surface, item, line))
        return len(joined)

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
        while not self._stop.wait(self.config.join.tick_seconds):
            try:
                self.join_now()
            except Exception:  # keep serving; the fault is logged
                log.exception("join step failed")

    def _learn_loop(self) -> None:
        while True:
            try:
                item = self._learn_queue.get(timeout=self.config.join.tick_seconds)
            except queue.Empty:
                item = ()
            if item is None:
                return
            try:
                if item:
                    name, joined, line = item
                    self.surfaces[name].learn(joined, line)
                for surface in self.surfaces.values():
                    if surface.publish_due():
                        surface.publish()
            except Exception:
                self.learner_errors += 1
                log.exception("learning step failed; serving continues on the last good model")
            finally:
                if item:
                    self._learn_queue.task_done()

    def wait_learned(self, timeout: float = 30.0) -> None:
        """Block until everything joined so far has been learned (tests, demo)."""
        deadline = time.monotonic() + timeout
        while self._learn_queue.unfinished_tasks:
            if time.monotonic() > deadline:
                raise TimeoutError("learner did not catch up")
            time.sleep(0.01)

    def settle(self, ahead: float | None = None, timeout: float = 30.0) -> int:
        """Join every decision as if ``ahead`` seconds had passed (default: its
        whole reward window), learn all of it and publish a version: what the
        demo does once its audience has left, and tests before they look at a
        model. Returns how many decisions joined."""
        joined = self.join_now(now=self.clock() + (self.config.join.window_seconds if ahead is None else ahead))
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
