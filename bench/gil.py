"""What handler threads contending for the GIL cost ``Engine.decide``, in-process.

Usage:
    .venv/bin/python -m bench.gil [--threads 8] [--rounds 4] [--seconds 2] [--pin]

One engine (measurement C's: 50x3, event log, joiner and learner threads
live), driven in interleaved rounds by: one thread; ``--threads`` threads at
once (as a server's handler threads are with that many calls in flight); the
same threads taking one lock around each decide (only one of them wants the
GIL at a time); and the same threads with a 50 ms switch interval. Reports
decisions per process CPU-second, median of the rounds, and each variant
against one thread. ``--pin``: the whole process on one allowed CPU first
(``server.affinity``, as ``placement serve --pin-cpus``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

from bench.inproc import EngineInProc
from bench.workload import make_workload


def per_cpu_second(engine: EngineInProc, threads: int, seconds: float, lock: threading.Lock | None) -> float:
    """Decisions per process CPU-second with ``threads`` callers for ``seconds``."""
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            if lock is None:
                engine.step()
            else:
                with lock:
                    engine.step()
            counts[i] += 1

    cpu = time.process_time()
    callers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    return sum(counts) / (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gil", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=8, help="callers at once [8]")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (median) [4]")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per variant per round [2]")
    ap.add_argument("--pin", action="store_true", help="the process on one CPU first")
    args = ap.parse_args(argv)
    if args.pin:
        from server.affinity import pin_serving_process

        pin_serving_process(0)
    n = args.threads
    variants = {"1 thread": (1, False, 0.005), f"{n} threads": (n, False, 0.005),
                f"{n} threads, one lock": (n, True, 0.005), f"{n} threads, 50 ms switch interval": (n, False, 0.05)}
    engine = EngineInProc(make_workload(50, 3, 7))
    rates: dict[str, list[float]] = {name: [] for name in variants}
    default_interval = sys.getswitchinterval()
    try:
        engine.run(0.5)  # warm
        for _ in range(args.rounds):
            for name, (threads, locked, interval) in variants.items():
                sys.setswitchinterval(interval)
                rates[name].append(per_cpu_second(engine, threads, args.seconds, threading.Lock() if locked else None))
    finally:
        sys.setswitchinterval(default_interval)
        engine.close()
    base = statistics.median(rates["1 thread"])
    print(f"Engine.decide 50x3, decisions per process CPU-second ({args.rounds} rounds x {args.seconds} s"
          f"{', pinned' if args.pin else ''}):")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"  {name:36s} {med:7.0f}  ({med / base:.2f} x one thread; rounds "
              f"{', '.join(f'{v:.0f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
