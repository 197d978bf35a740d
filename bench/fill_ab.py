"""Policy.decide per second with fill=joint vs in_order, interleaved rounds, one process.

Usage: ``.venv/bin/python -m bench.fill_ab`` (what the joint fill costs the policy)."""
import dataclasses
import json
import time
import uuid

from bandit.policy import Policy
from bandit.vwargs import LearningSettings
from bench.workload import make_workload

def rate(policy, inp, seconds=0.5):
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        policy.decide(inp, uuid.uuid4().hex); n += 1
    return n / seconds

for cands, slots in [(50, 3), (10, 3), (10, 1)]:
    inp = make_workload(cands, slots, 7).decision_input()
    pols = {f: Policy(dataclasses.replace(LearningSettings(), fill=f)) for f in ("joint", "in_order")}
    res = {f: [] for f in pols}
    for _ in range(5):
        for f, p in pols.items():
            res[f].append(rate(p, inp))
    med = {f: sorted(v)[2] for f, v in res.items()}
    print(json.dumps({"config": f"{cands}x{slots}", **{f: round(v) for f, v in med.items()},
                      "joint/in_order": round(med["joint"] / med["in_order"], 3)}))
