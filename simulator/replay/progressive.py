"""Progressive replay: a target policy over the log in time order.

Each event is valued first -- pi(. | x, logged a_<k) per slot -- and then the
target learns from it, so a learning target is valued only on events it has
not seen yet (progressive validation). Many targets run at once through
:mod:`simulator.fanout`; VW targets are the heavy ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from bandit.logformat.events import JoinedEvent
from simulator import fanout
from simulator.replay.logarrays import ReplayLog, as_row
from simulator.replay.targets import Target, TargetSpec, make_target

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


def run_task(task: ProgressiveTask, log: ReplayLog, progress: Progress | None = None) -> np.ndarray:
    """The target's distributions over the log (module-level: fan-out calls it)."""
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
