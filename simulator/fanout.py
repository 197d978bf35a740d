"""Where independent, deterministic tasks run: here, a local process pool, or Ray.

One helper for every fan-out of the simulator (grid cells of ``simulate``,
VW targets of ``replay``, its ``--search`` and ``--importance``): a plain
module-level callable ``fn(item, shared)`` over a list of items, with one
object ``shared`` by all (a replay log) sent to each process once. Each task
is fully determined by its item, so where it runs changes the wall time,
never the numbers. Ray is imported only when asked for, and this is the one
place that ships this package's code to a Ray cluster.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_workers() -> int:
    """The cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@dataclass(frozen=True)
class FanOut:
    """Where tasks run. ``ray=True`` starts a local Ray with ``workers`` CPUs
    (or uses one this process already initialised); ``ray_address`` joins an
    existing cluster, which needs VW and this package's dependencies (the
    package itself is shipped with the job). ``workers=1``: in this process."""

    workers: int | None = None
    ray: bool = False
    ray_address: str | None = None

    @property
    def uses_ray(self) -> bool:
        return self.ray or bool(self.ray_address)

    @property
    def processes(self) -> int:
        return max(1, self.workers or default_workers())


_DEFAULT: ContextVar[FanOut] = ContextVar("fan_out", default=FanOut())


@contextmanager
def using(where: FanOut) -> Iterator[None]:
    """Make ``where`` the default of every :func:`current` call in this context,
    and start Ray once for all of it when asked (shut down afterwards if
    started here)."""
    token = _DEFAULT.set(where)
    try:
        with _ray_session(where):
            yield
    finally:
        _DEFAULT.reset(token)


def current() -> FanOut:
    return _DEFAULT.get()


def fan_out(fn: Callable[[Item, Any], Result], items: Sequence[Item], shared: Any = None, *,
            where: FanOut | None = None, on_done: Callable[[int, Result], None] | None = None,
            meanwhile: Callable[[], None] | None = None) -> list[Result]:
    """``[fn(item, shared) for item in items]``, run where ``where`` says;
    ``on_done(i, result)`` as each finishes; ``meanwhile()`` runs in this
    process while the tasks run elsewhere (cheap work that needs no worker)."""
    where = where or current()
    if where.uses_ray and items:
        return _on_ray(fn, items, shared, where, on_done, meanwhile)
    if where.processes == 1 or len(items) <= 1:
        if meanwhile:
            meanwhile()
        return [_done(on_done, i, fn(item, shared)) for i, item in enumerate(items)]
    return _in_pool(fn, items, shared, where.processes, on_done, meanwhile)


def _done(on_done: Callable[[int, Result], None] | None, i: int, result: Result) -> Result:
    if on_done:
        on_done(i, result)
    return result


_SHARED: Any = None


def _init_worker(shared: Any) -> None:
    global _SHARED
    _SHARED = shared


def _call_in_worker(fn: Callable[[Item, Any], Result], item: Item) -> Result:
    return fn(item, _SHARED)


def _in_pool(fn, items, shared, workers, on_done, meanwhile) -> list:
    """A spawned pool (the caller may hold threads, e.g. a gRPC server); the
    shared object is pickled once per process, not once per task."""
    ctx = multiprocessing.get_context("spawn")
    out: list[Any] = [None] * len(items)
    with ProcessPoolExecutor(min(workers, len(items)), mp_context=ctx,
                             initializer=_init_worker, initargs=(shared,)) as pool:
        futures = {pool.submit(_call_in_worker, fn, item): i for i, item in enumerate(items)}
        try:
            if meanwhile:
                meanwhile()
            for future in as_completed(futures):
                i = futures[future]
                out[i] = _done(on_done, i, future.result())
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return out


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError("Ray is not installed: pip install 'placement-engine[ray]'") from None
    return ray


def _on_ray(fn, items, shared, where: FanOut, on_done, meanwhile) -> list:
    """One Ray task (one CPU) per item, the shared object put in the store once."""
    ray = _import_ray()
    with _ray_session(where):
        remote = ray.remote(num_cpus=1)(fn)
        shared_ref = ray.put(shared)
        pending = {remote.remote(item, shared_ref): i for i, item in enumerate(items)}
        if meanwhile:
            meanwhile()
        out: list[Any] = [None] * len(items)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                out[i] = _done(on_done, i, ray.get(ref))
        return out


@contextmanager
def _ray_session(where: FanOut) -> Iterator[None]:
    """Ray up for the block when asked and not already up; shut down after if started here."""
    if not where.uses_ray:
        yield
        return
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        if where.ray_address:
            import bandit
            import simulator

            # Ship this code to the cluster so its workers run the same version.
            ray.init(address=where.ray_address, log_to_driver=False,
                     runtime_env={"py_modules": [bandit, simulator]})
        else:
            ray.init(num_cpus=where.processes, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
