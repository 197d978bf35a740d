"""Policy.decide per second of several settings, interleaved rounds, one process.

``.venv/bin/python -m bench.fill_ab`` compares fill=joint with fill=in_order
(what the joint fill costs the policy); ``--variant NAME=SETTINGS`` (repeat;
``SETTINGS`` as after ``vw:``, e.g. ``regcb=algorithm=regcb,floor=0.005``)
compares any settings instead, each ratio against the first (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid

from bandit.decision import DecisionInput
from bandit.policy import Policy
from bandit.vwargs import FILLS, LearningSettings
from bench.workload import make_workload
from simulator.specs import TargetError, parse_settings

CONFIGS = ((50, 3), (10, 3), (10, 1))  # candidates x slots


def rate(policy: Policy, inp: DecisionInput, seconds: float = 0.5) -> float:
    """Decisions per second of one policy on one input, for ``seconds``."""
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        policy.decide(inp, uuid.uuid4().hex)
        n += 1
    return n / seconds


def _variant(text: str) -> tuple[str, LearningSettings]:
    name, eq, spec = text.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"'{text}' must look like NAME=SETTINGS")
    try:
        return name, parse_settings(spec, where=f"--variant {name}")
    except TargetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=_variant, action="append", default=[],
                        help="NAME=SETTINGS (repeat); default: the fills, joint against in_order")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    variants = dict(args.variant) or {f: LearningSettings(fill=f) for f in reversed(FILLS)}
    first = next(iter(variants))
    for cands, slots in CONFIGS:
        inp = make_workload(cands, slots, 7).decision_input()
        policies = {name: Policy(settings) for name, settings in variants.items()}
        rates: dict[str, list[float]] = {name: [] for name in policies}
        for _ in range(args.rounds):  # interleaved: drift hits all alike
            for name, policy in policies.items():
                rates[name].append(rate(policy, inp))
        med = {name: statistics.median(v) for name, v in rates.items()}
        print(json.dumps({"config": f"{cands}x{slots}", **{name: round(v) for name, v in med.items()},
                          **{f"{name}/{first}": round(med[name] / med[first], 3) for name in med if name != first}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
