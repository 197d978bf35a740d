"""C and C_policy at 50x3 in one process, for A/B runs of two checkouts.

Usage (each checkout with the same venv, alternating):
    PYTHONPATH=CHECKOUT .venv/bin/python -m bench.engine_ab [--latency SECONDS]

C/C_policy (logging, joining and bookkeeping against the policy alone) is a
ratio inside one process, so it holds when the machine's speed drifts.
``--latency``: then each call's time of C for that long, one caller (the
joiner and learner threads live): p50, p99, p99.9 and max in ms, which is where
waiting for the disk (an fsync on a caller's path) shows.
``--breakdown``: then where C's time per decision goes beside the policy: the
engine's own steps timed around their calls (``make_decision`` holds the
policy), and the CPU its other threads (fsync, checkpoint, joiner) take.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

from bench.inproc import EngineInProc, inproc_variants, measure_interleaved
from bench.workload import make_workload


def latencies(seconds: float) -> dict[str, float]:
    eng = EngineInProc(make_workload(50, 3, 7))
    try:
        eng.run(0.5)
        times = []
        end = time.perf_counter() + seconds
        while (start := time.perf_counter()) < end:
            eng.step()
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        eng.close()
    times.sort()

    def q(f: float) -> float:
        return round(times[min(len(times) - 1, int(f * len(times)))], 2)

    return {"calls": len(times), "p50_ms": q(0.5), "p99_ms": q(0.99), "p99.9_ms": q(0.999), "max_ms": round(times[-1], 2)}


BREAKDOWN = ("make_decision", "event_line", "Engine._submit", "Engine._await", "Engine._decided")


def _timed(owner, name: str, totals: dict[str, int], key: str) -> None:
    """Replace ``owner.name`` by a wrapper adding its calls' ns to ``totals[key]``."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        start = time.perf_counter_ns()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter_ns() - start
    setattr(owner, name, wrapper)


def breakdown(seconds: float, rounds: int = 3) -> list[dict[str, float]]:
    """Per round: C and C_policy (alternating), and µs per decision of each of
    BREAKDOWN's steps (``_decided`` runs inside ``_await``) and of the
    engine's other threads."""
    import server.engine as engine

    totals = dict.fromkeys(BREAKDOWN, 0)
    for key in BREAKDOWN:
        owner, _, name = key.rpartition(".")
        _timed(engine.Engine if owner else engine, name, totals, key)
    w = make_workload(50, 3, 7)
    variants = inproc_variants(w, 7, ["C_policy", "C"])
    out = []
    try:
        for v in variants.values():  # warm-up: first calls fill the engine's caches
            v.run(0.5)
        for _ in range(rounds):
            totals.update(dict.fromkeys(BREAKDOWN, 0))
            cpu, main_thread, n, end = time.process_time(), time.thread_time(), 0, time.perf_counter() + seconds
            while time.perf_counter() < end:
                variants["C"].step()
                n += 1
            other = (time.process_time() - cpu) - (time.thread_time() - main_thread)
            c = n / seconds
            policy = variants["C_policy"].run(seconds)
            out.append({"C": round(c), "C_policy": round(policy), "C/C_policy": round(c / policy, 3),
                        **{f"{k} us": round(totals[k] / n / 1e3, 1) for k in BREAKDOWN},
                        "other threads us": round(other / n * 1e6, 1)})
    finally:
        for v in variants.values():
            v.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.engine_ab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, metavar="SECONDS", help="per-call latency of C instead of rates")
    ap.add_argument("--breakdown", type=float, metavar="SECONDS", help="C's steps per decision, rounds this long")
    args = ap.parse_args()
    if args.breakdown:
        for row in breakdown(args.breakdown):
            print(json.dumps(row))
        return
    if args.latency:
        print(json.dumps(latencies(args.latency)))
        return
    w = make_workload(50, 3, 7)
    variants = inproc_variants(w, 7, ["C_policy", "C"])
    rates = measure_interleaved(variants, rounds=5, seconds=0.6)
    for v in variants.values():
        v.close()
    c, policy = rates["C"]["rate"], rates["C_policy"]["rate"]
    print(json.dumps({"C_policy": round(policy), "C": round(c), "C/C_policy": round(c / policy, 3)}))


if __name__ == "__main__":
    main()
