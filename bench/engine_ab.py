"""C and C_policy at 50x3 in one process, for A/B runs of two checkouts.

Usage (each checkout with the same venv, alternating):
    PYTHONPATH=CHECKOUT .venv/bin/python -m bench.engine_ab [--latency SECONDS]

C/C_policy (logging, joining and bookkeeping against the policy alone) is a
ratio inside one process, so it holds when the machine's speed drifts.
``--latency``: then each call's time of C for that long, one caller (the
joiner and learner threads live): p50, p99, p99.9 and max in ms, which is where
waiting for the disk (an fsync on a caller's path) shows.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.engine_ab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, metavar="SECONDS", help="per-call latency of C instead of rates")
    args = ap.parse_args()
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
