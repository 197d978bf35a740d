"""C and C_policy at 50x3 in one process, for A/B runs of two checkouts.

Usage (each checkout with the same venv, alternating):
    PYTHONPATH=CHECKOUT .venv/bin/python -m bench.engine_ab

C/C_policy (logging, joining and bookkeeping against the policy alone) is a
ratio inside one process, so it holds when the machine's speed drifts.
"""

from __future__ import annotations

import json

from bench.inproc import inproc_variants, measure_interleaved
from bench.workload import make_workload


def main() -> None:
    w = make_workload(50, 3, 7)
    variants = inproc_variants(w, 7, ["C_policy", "C"])
    rates = measure_interleaved(variants, rounds=5, seconds=0.6)
    for v in variants.values():
        v.close()
    c, policy = rates["C"]["rate"], rates["C_policy"]["rate"]
    print(json.dumps({"C_policy": round(policy), "C": round(c), "C/C_policy": round(c / policy, 3)}))


if __name__ == "__main__":
    main()
