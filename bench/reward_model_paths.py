"""The reward model's two paths on the same log, CPU seconds of the fit:
``.venv/bin/python -m bench.reward_model_paths [--events 2000] [--collections 20]``.

Two logs of ``--events`` two-slot decisions (tests/test_reward_model.py's
``wide_events``): one whose collections carry only catalog features, and the
same with a per-request forecast on every collection (every listing its own
candidate). Each is fitted with the grouped path and row by row, median of
``--repeats``; the default picks the path by pairs and rows
(``bandit.ope.reward_model.MIN_GROUP_ROWS``). Record runs in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import bandit.ope.reward_model as rm
from bandit.features import FeatureGroup
from bandit.logformat.events import JoinedEvent
from simulator.replay.logarrays import ReplayLog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_reward_model import wide_events  # noqa: E402  (the test suite's log generator)


def with_forecast(events: list[JoinedEvent], seed: int) -> list[JoinedEvent]:
    """The same events, every collection with a per-request forecast."""
    rng = np.random.default_rng(seed)
    out = []
    for e in events:
        inp = e.decision.inp
        cands = tuple(replace(c, groups=c.groups + (FeatureGroup("signal", {"forecast": float(rng.normal(1, .5))}),))
                      for c in inp.candidates)
        out.append(replace(e, decision=replace(e.decision, inp=replace(inp, candidates=cands))))
    return out


def cpu_of(log: ReplayLog, grouped: bool | None, repeats: int) -> tuple[float, str]:
    features, (action, reward, present) = log.features(), log.by_choice()
    times, path = [], ""
    for _ in range(repeats):
        t = time.process_time()
        path = rm.fit_reward_model(features, action, reward, present, grouped=grouped).quality["path"]
        times.append(time.process_time() - t)
    return statistics.median(times), path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--collections", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    catalog = wide_events(args.events, seed=5, collections=args.collections)
    print("| log | grouped CPU-s | row by row CPU-s | default picks |\n|---|---:|---:|---|")
    for name, events in (("catalog features", catalog), ("per-request forecast", with_forecast(catalog, 8))):
        log = ReplayLog.from_events(events)
        grouped, _ = cpu_of(log, True, args.repeats)
        rows, _ = cpu_of(log, False, args.repeats)
        _, picked = cpu_of(log, None, 1)
        print(f"| {name} | {grouped:.2f} | {rows:.2f} | {picked} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
