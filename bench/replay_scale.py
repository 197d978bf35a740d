"""Replay scale-out: ``.venv/bin/python -m bench.replay_scale``.

Times the VW-target fan-out of ``placement replay`` (``simulator.replay.run_targets``:
every target trained on the log in time order with progressive validation,
which is what ``--search`` does for its grid) for a grid of VW settings on a
seeded joined log, on

  serial   ``workers=1``: every target in this process, one after the other
  pool-N   the default engine: a spawned process pool of N workers
  ray-N    ``ray=True``: a local Ray started with N CPUs (started and shut
           down inside the call, as ``placement replay --ray`` does)

and checks that every engine returns bitwise the same distributions. The
log (bench.parsing.make_events: context 10 features in 3 groups, 6 features
per collection in 2 groups, 2 slot features) is built in memory; the grid is
8 settings by default (algorithm epsilon|squarecb x learning_rate 0.1|0.5 x
interactions CA+SA|CA+SA+CSA). Speed-ups are against ``serial`` from the same
run. Ray's bare start + shut-down is timed separately.

Ray starts its worker processes with niceness 15 (``RAY_worker_niceness``):
on a machine shared with other work they yield the CPU to everything else,
the pool and the serial run do not. For an even contest run with
``RAY_worker_niceness=0`` in the environment (recorded in the output).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bandit.vwargs import LearningSettings
from bench.parsing import make_events
from bench.report import log, publish
from simulator.replay.progressive import ProgressiveTask, run_targets
from simulator.replay.logarrays import ReplayLog
from simulator.replay.search import grid_settings
from simulator.replay.targets import TargetSpec
from simulator.specs import settings_label

DEFAULT_GRID = ("algorithm=epsilon|squarecb", "learning_rate=0.1|0.5", "interactions=CA+SA|CA+SA+CSA")
RESULTS = Path(__file__).parent / "results"


def ray_startup_s(cpus: int) -> float:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray.shutdown()
    return time.perf_counter() - t0


def parse_engine(text: str) -> tuple[str, int]:
    if text == "serial":
        return "serial", 1
    kind, _, n = text.partition("-")
    if kind not in ("pool", "ray") or not n.isdigit():
        raise argparse.ArgumentTypeError(f"engine '{text}': use serial, pool-N or ray-N")
    return kind, int(n)


def run(args: argparse.Namespace) -> dict[str, Any]:
    log(f"building a {args.decisions:,} x {args.slots} x {args.candidates} log (seed {args.seed}) ...")
    t0 = time.perf_counter()
    replay_log = ReplayLog.from_events(make_events(args.decisions, args.slots, args.candidates, args.seed))
    build_s = time.perf_counter() - t0
    settings = grid_settings(args.grid, LearningSettings())
    tasks = [ProgressiveTask(TargetSpec("vw", settings_label(s), s)) for s in settings]
    log(f"  {build_s:.1f} s; {len(tasks)} VW settings")
    info = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
            "cores": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg(), "decisions": args.decisions,
            "slots": args.slots, "candidates": args.candidates, "seed": args.seed, "grid": list(args.grid),
            "targets": [t.spec.label for t in tasks], "build_s": build_s,
            "ray_worker_niceness": os.environ.get("RAY_worker_niceness", "15 (Ray's default)")}
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        info["ray"] = None
    rows: list[dict[str, Any]] = []
    reference: list[np.ndarray] | None = None
    for text in args.engines:
        kind, n = parse_engine(text)
        if kind == "ray" and info["ray"] is None:
            log(f"{text}: Ray is not installed, skipped")
            continue
        log(f"{text}: {len(tasks)} targets x {args.decisions:,} decisions ...")
        t0 = time.perf_counter()
        dists = run_targets(replay_log, tasks, workers=n, ray=kind == "ray")
        wall = time.perf_counter() - t0
        same = None
        if reference is None:
            reference = dists
        else:
            same = all(np.array_equal(a, b) for a, b in zip(reference, dists))
        rows.append({"engine": text, "kind": kind, "workers": n, "wall_s": wall,
                     "target_events_per_s": len(tasks) * args.decisions / wall, "same_as_first": same})
        log(f"  {wall:.1f} s, identical to {args.engines[0]}: {same}")
    serial = next((r["wall_s"] for r in rows if r["engine"] == "serial"), None)
    for r in rows:
        r["speedup_vs_serial"] = serial / r["wall_s"] if serial else None
        one = next((x["wall_s"] for x in rows if x["kind"] == r["kind"] and x["workers"] == 1), None)
        r["speedup_vs_1_worker"] = one / r["wall_s"] if one and r["kind"] != "serial" else None
    if info["ray"] and not args.no_ray_startup:
        info["ray_startup_shutdown_s"] = {n: ray_startup_s(n) for n in (1, 2)}
    info["loadavg_end"] = os.getloadavg()
    return {"machine": info, "rows": rows}


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    out = [f"{m['decisions']:,} decisions x {m['slots']} slots x {m['candidates']} collections, "
           f"{len(m['targets'])} VW settings ({'; '.join(m['grid'])}); {m['cores']} cores; Ray {m['ray']} "
           f"(worker niceness {m.get('ray_worker_niceness', '15')}); "
           f"load average {m['loadavg_start'][0]:.1f} -> {m['loadavg_end'][0]:.1f}", "",
           "| engine | workers | wall s | target-events/s | x serial | x same engine, 1 worker | identical |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for r in res["rows"]:
        same = "reference" if r["same_as_first"] is None else ("yes" if r["same_as_first"] else "**NO**")
        out.append(f"| {r['engine']} | {r['workers']} | {r['wall_s']:.1f} | {r['target_events_per_s']:,.0f} | "
                   f"{fmt(r['speedup_vs_serial'])} | {fmt(r['speedup_vs_1_worker'])} | {same} |")
    st = m.get("ray_startup_shutdown_s")
    if st:
        out += ["", "Bare Ray start + shut-down (included in the ray rows): "
                + ", ".join(f"{k} CPU {v:.1f} s" for k, v in st.items()) + "."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decisions", type=int, default=50_000)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", action="append", default=None,
                   help="search axis key=v1|v2 (repeat); default: " + "; ".join(DEFAULT_GRID))
    p.add_argument("--engines", default="serial,pool-2,ray-1,ray-2",
                   help="comma-separated, run in this order: serial, pool-N, ray-N (default serial,pool-2,ray-1,ray-2)")
    p.add_argument("--no-ray-startup", action="store_true", help="skip timing Ray's bare start-up")
    p.add_argument("--json-out", type=Path, default=RESULTS / "replay_scale.json")
    args = p.parse_args(argv)
    args.grid = tuple(args.grid or DEFAULT_GRID)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in args.engines:
        parse_engine(e)
    res = run(args)
    return publish(res, args.json_out, markdown)


if __name__ == "__main__":
    sys.exit(main())
