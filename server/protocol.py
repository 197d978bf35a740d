"""The engine a gRPC service serves, whatever the topology.

:class:`server.engine.Engine` (one process: decide, log, join, learn) and
:class:`server.workers.WorkerEngine` (a serving worker: decide and log; the
rest goes to its coordinator) both implement it, so
:class:`server.service.PlacementService` and embedding code (the simulator's
in-process runs, tests) speak to either the same way.
"""

from __future__ import annotations

from typing import Protocol

from bandit.catalog import Catalog
from bandit.logformat.events import DecisionEvent
from server.config import ServerConfig
from server.explain import Explanation
from server.stats import Stats


class ServingEngine(Protocol):
    config: ServerConfig
    catalog: Catalog
    counts: dict[str, int]

    def decide(self, call, wanted=None) -> DecisionEvent:
        """Decide, log durably, then return the decision (a ``DecideCall``);
        ``wanted()`` false once it is logged: marked unserved, CallerGone."""
        ...

    def explain(self, event: DecisionEvent, top: int = 5) -> Explanation:
        """Within the explain bounds (see server.explain)."""
        ...

    def reward(self, event_id: str, slot_id: str, value: float, at: float | None = None,
               timeout: float | None = None) -> str:
        """Log and join a reward; ``timeout``: the caller's time left (None: it
        set no deadline), for an engine that asks another process."""
        ...

    def activate(self, event_id: str, at: float | None = None, timeout: float | None = None) -> None: ...

    def writable(self) -> bool:
        """Whether decisions can be logged now (health follows it)."""
        ...

    def stats(self) -> Stats:
        """One snapshot of every counter, every serving process included."""
        ...

    def drain(self) -> None:
        """Stop taking work, finish what was accepted, flush the logs."""
        ...
