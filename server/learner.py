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
from dataclasses import dataclass
from pathlib import Path

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
        with self._learn_lock:
            try:
                if joined.decision.mode != Mode.LOGGING_ONLY.value:
                    self._learner.learn_line(line or dumps(joined_to_dsjson(joined)))
                    self.examples_learned += 1
                    self._since_publish += 1
                self.last_learned_event_ts = joined.decision.timestamp
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
        with self._learn_lock:
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
