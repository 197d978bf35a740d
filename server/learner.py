"""The online learner and the serving policy of one surface.

The learner owns its own VW workspace and learns joined examples in the order
of the surface's joined log. Every N examples or T seconds it publishes a
numbered model version; the serving side then loads that file into a fresh
workspace (off the request path) and swaps one reference, so in-flight
requests finish on the old model and none waits or fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bandit.decision import DecisionInput, Mode
from bandit.features import Candidate, SlotSpec
from bandit.logformat.events import JoinedEvent, dumps, joined_to_dsjson
from bandit.policy import LogLearner, Policy
from bandit.vwargs import LearningSettings
from server.config import LearnerConfig
from server.modelstore import ModelStore, ModelStoreError, VersionInfo

log = logging.getLogger(__name__)


@dataclass
class SurfaceCounters:
    decisions: int = 0
    apprentice_decisions: int = 0
    apprentice_agreements: int = 0


class SurfaceModel:
    """Serving + learning state of one surface."""

    def __init__(self, name: str, settings: LearningSettings, mode: Mode, store: ModelStore,
                 config: LearnerConfig):
        self.name, self.settings, self.mode = name, settings, mode
        self.store, self.config = store, config
        self.counters = SurfaceCounters()
        self._swap_lock = threading.Lock()
        self._learn_lock = threading.Lock()
        # Held from a version's write to the serving side's swap to it (the
        # load takes a while), so model_info never sees the one without the other.
        self._publish_lock = threading.Lock()
        finished = store.finish_interrupted_publish()
        if finished is not None:
            log.warning("surface %s: model version %d was written but not made current before a crash: "
                        "it is now", name, finished.version)
        current = store.current()
        if current is None:
            fresh = Policy(settings)
            current = store.publish(fresh.save, examples_learned=0, joined_through=0,
                                    origin="initial", arguments=fresh.arguments)
            fresh.close()
        self._learner = self._learner_from(current)
        self.serving = self._load(current)
        self.examples_learned = current.examples_learned
        self.joined_through = current.joined_through
        self._since_publish = 0
        self._last_publish = time.monotonic()
        self.last_learned_event_ts: float | None = None

    def _load(self, info: VersionInfo) -> Policy:
        return Policy(self.settings, model_path=self.store.path(info.version), version=str(info.version))

    def _learner_from(self, info: VersionInfo) -> LogLearner:
        return LogLearner(self.settings, model_path=self.store.path(info.version))

    @property
    def version(self) -> str:
        return self.serving.version

    def learn(self, joined: JoinedEvent, line: str | None = None) -> None:
        """Learn one joined example (the next line of the joined log, given as
        ``line`` when at hand). The position advances even if VW fails on it,
        so a bad record is skipped once, not retried forever."""
        self.learn_line(joined.decision.mode, joined.decision.timestamp,
                        line or dumps(joined_to_dsjson(joined)))

    def learn_line(self, mode: str, timestamp: float, line: str) -> None:
        """:meth:`learn` from the line alone and the decision's mode and time."""
        with self._learn_lock:
            try:
                if mode != Mode.LOGGING_ONLY.value:
                    self._learner.learn_line(line)
                    self.examples_learned += 1
                    self._since_publish += 1
                self.last_learned_event_ts = timestamp
            finally:
                self.joined_through += 1

    def skip(self) -> None:
        """Step over a joined-log line that could not be read."""
        with self._learn_lock:
            self.joined_through += 1

    @property
    def unpublished(self) -> int:
        """Examples learned since the last published version."""
        return self._since_publish

    def publish_due(self) -> bool:
        if self._since_publish == 0:
            return False
        return (self._since_publish >= self.config.publish_every_examples
                or time.monotonic() - self._last_publish >= self.config.publish_every_seconds)

    def publish(self, origin: str = "learned") -> VersionInfo:
        with self._publish_lock:
            with self._learn_lock:
                info = self.store.publish(self._learner.save, examples_learned=self.examples_learned,
                                          joined_through=self.joined_through, origin=origin,
                                          arguments=self._learner.arguments)
                self._since_publish = 0
                self._last_publish = time.monotonic()
            self._swap_serving(info)
        log.info("surface %s: published model version %d (%d examples)", self.name, info.version,
                 info.examples_learned)
        return info

    def _swap_serving(self, info: VersionInfo) -> None:
        fresh = self._load(info)
        with self._swap_lock:
            self.serving = fresh  # the old workspace is freed when its last request ends

    def install(self, source: Path, origin: str, examples_learned: int) -> VersionInfo:
        """Rollback or import: publish ``source``'s weights as a new version
        (history stays append-only) and continue learning and serving from it.
        The learner and the serving policy are loaded from ``source`` and the
        policy decides once before anything is published, so a model this
        surface cannot use never becomes CURRENT (ModelStoreError instead)."""
        data = Path(source).read_bytes()
        learner, serving = self._loaded(Path(source))
        with self._publish_lock, self._learn_lock:
            info = self.store.publish(lambda p: p.write_bytes(data), examples_learned=examples_learned,
                                      joined_through=self.joined_through, origin=origin,
                                      arguments=self._learner.arguments)
            self._learner = learner
            self.examples_learned = examples_learned
            self._since_publish = 0
            serving.version = str(info.version)
            with self._swap_lock:
                self.serving = serving
        return info

    def model_info(self) -> tuple[Policy, list[VersionInfo]]:
        """The serving policy and the kept versions as one snapshot: never
        between a publish's write and its swap (which listed a version newer
        than the one called current)."""
        with self._publish_lock:
            return self.serving, self.store.versions()

    def _loaded(self, source: Path) -> tuple[LogLearner, Policy]:
        """A learner and a serving policy of this surface on ``source``, the
        policy tried on a one-slot decision."""
        try:
            learner = LogLearner(self.settings, model_path=source)
            serving = Policy(self.settings, model_path=source, version="unpublished")
            serving.decide(DecisionInput((), (SlotSpec("probe"),), (Candidate("probe"),)), "probe")
        except (RuntimeError, ValueError) as exc:  # VW's errors are plain RuntimeErrors
            raise ModelStoreError(f"model does not load for surface {self.name}: {exc}") from None
        return learner, serving


@dataclass(frozen=True)
class LearnItem:
    """One joined decision on its way to the learner: its joined-log line (what
    is learned, with VW's own parser) and the two facts the learner needs
    besides, not the rebuilt event (~5x the line's size at 50x3)."""

    surface: str
    mode: str
    timestamp: float
    line: str

    @property
    def size(self) -> int:
        """Bytes it holds: the line (ASCII JSON, one byte a character) and the
        objects around it."""
        return len(self.line) + ITEM_OVERHEAD_BYTES


ITEM_OVERHEAD_BYTES = 1100  # the rest of an item (python -m bench.pending: 976 B at 50x3, 1,096 B at 5x1)
MAX_JOIN_STEP = 256  # decisions closed under one hold of the engine's lock


class LearnBacklog:
    """Joined decisions waiting for the learner, bounded in bytes (and items).

    The join never blocks on it: it asks :meth:`room` how many more decisions
    it may close and leaves the rest pending (their windows are over, their
    rewards refused as expired, so the example is the same whenever it
    joins); the join loop's checkpoints go on. The bound can be passed by at
    most one join step of lines already counted in :meth:`room`'s estimate.
    """

    def __init__(self, max_bytes: int, max_items: int):
        self.max_bytes, self.max_items = max_bytes, max_items
        self._items: deque[LearnItem] = deque()
        self._bytes = 0
        self._unfinished = 0  # put and not yet learned (the one being learned included)
        self._mean_size: float | None = None  # of the items seen (a moving mean); None: none yet
        self._closed = False
        self._cond = threading.Condition()

    def room(self) -> int:
        """How many more decisions fit (by the mean size of those seen; one
        before any was seen), at least one while the backlog is under its
        bounds, at most one join step."""
        with self._cond:
            if self._bytes >= self.max_bytes or len(self._items) >= self.max_items:
                return 0
            if self._mean_size is None:
                return 1
            fit = int((self.max_bytes - self._bytes) // self._mean_size)
            return max(1, min(fit, self.max_items - len(self._items), MAX_JOIN_STEP))

    def put_many(self, items: list[LearnItem]) -> None:
        with self._cond:
            for item in items:
                size = item.size
                self._items.append(item)
                self._bytes += size
                mean = self._mean_size
                self._mean_size = float(size) if mean is None else mean + (size - mean) * 0.05
            self._unfinished += len(items)
            self._cond.notify_all()

    def get(self, timeout: float) -> LearnItem | None:
        """The oldest item, or None after ``timeout`` (or once closed and empty)."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._bytes -= item.size
            self._cond.notify_all()
            return item

    def done(self) -> None:
        """One item got by :meth:`get` is learned (or failed)."""
        with self._cond:
            self._unfinished -= 1
            self._cond.notify_all()

    def close(self) -> None:
        """No more items: :meth:`get` returns None once the rest are taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def wait(self, until: Callable[[], bool], timeout: float) -> bool:
        """Wait (at most ``timeout``) until ``until()`` holds; it is called
        under the backlog's lock, after every change."""
        with self._cond:
            return self._cond.wait_for(until, timeout)

    @property
    def unfinished(self) -> int:
        return self._unfinished

    def depth(self) -> tuple[int, int]:
        """(items, bytes) waiting: the gauges."""
        with self._cond:
            return len(self._items), self._bytes


class RateMeter:
    """Events per second over the last ``window`` seconds (the learner's
    throughput gauge): counts in one-second buckets."""

    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.window, self.clock = window, clock
        self._buckets: deque[list[float]] = deque()  # [second, count]
        self._started = clock()
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        second = float(int(self.clock()))
        with self._lock:
            if self._buckets and self._buckets[-1][0] == second:
                self._buckets[-1][1] += n
            else:
                self._buckets.append([second, float(n)])
            self._expire()

    def rate(self) -> float:
        now = self.clock()
        with self._lock:
            self._expire()
            span = min(self.window, now - self._started)
            return sum(c for _, c in self._buckets) / span if span > 0 else 0.0

    def _expire(self) -> None:
        horizon = self.clock() - self.window
        while self._buckets and self._buckets[0][0] + 1 <= horizon:
            self._buckets.popleft()
