"""Pinning a serving process to one CPU (``pin_cpus = true``, opt-in).

Why: a serving process is a handful of threads handing one GIL to each
other (gRPC's poller, the handler threads, the checkpoint and learner
threads). When the scheduler moves them between cores, every hand-off wakes
a thread on a core whose caches hold none of the interpreter's or VW's
working set. On the 2-core machine of BENCHMARKS.md a one-process server
pinned to one core did about 1.5x the decisions per CPU-second of the same
server unpinned.

The CPUs are taken from the set this process may use (a container's cpuset,
``taskset``), never assumed to be 0..n-1; serving process ``index`` gets the
index-th of them, round robin when there are more processes than CPUs.
"""

from __future__ import annotations

import os
from typing import Sequence


def supported() -> bool:
    """Pinning needs the Linux scheduler calls (not on macOS or Windows)."""
    return hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task")


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def cpu_for(index: int, allowed: Sequence[int]) -> int:
    """Serving process ``index``'s CPU: the index-th allowed one, round robin."""
    if not allowed:
        raise ValueError("no CPU is allowed to this process")
    return allowed[index % len(allowed)]


def pin_process(cpu: int) -> None:
    """Pin every thread of this process, those already running included (a
    thread started before this call would otherwise stay free), to ``cpu``;
    threads started later inherit it."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except ProcessLookupError:  # the thread ended meanwhile
            pass


def pin_serving_process(index: int) -> int:
    """Pin this serving process to its CPU; returns the CPU."""
    cpu = cpu_for(index, allowed_cpus())
    pin_process(cpu)
    return cpu
