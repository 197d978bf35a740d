"""Policy.decide per second with fill=joint vs in_order, interleaved rounds, one process:
``.venv/bin/python -m bench.fill_ab`` (what the joint fill costs the policy; BENCHMARKS.md)."""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
import uuid

from bandit.decision import DecisionInput
from bandit.policy import Policy
from bandit.vwargs import FILLS, LearningSettings
from bench.workload import make_workload

CONFIGS = ((50, 3), (10, 3), (10, 1))  # candidates x slots


def rate(policy: Policy, inp: DecisionInput, seconds: float = 0.5) -> float:
    """Decisions per second of one policy on one input, for ``seconds``."""
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        policy.decide(inp, uuid.uuid4().hex)
        n += 1
    return n / seconds


def main(rounds: int = 5) -> int:
    for cands, slots in CONFIGS:
        inp = make_workload(cands, slots, 7).decision_input()
        policies = {f: Policy(dataclasses.replace(LearningSettings(), fill=f)) for f in FILLS}
        rates: dict[str, list[float]] = {f: [] for f in policies}
        for _ in range(rounds):  # interleaved: drift hits both alike
            for f, policy in policies.items():
                rates[f].append(rate(policy, inp))
        med = {f: statistics.median(v) for f, v in rates.items()}
        print(json.dumps({"config": f"{cands}x{slots}", **{f: round(v) for f, v in med.items()},
                          "joint/in_order": round(med["joint"] / med["in_order"], 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
