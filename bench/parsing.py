"""Joined-log parsing throughput: ``.venv/bin/python -m bench.parsing``.

Writes (once, cached by its parameters) a seeded joined log in the engine's
ccb DSJSON layout with ``bandit.logformat.events.joined_to_dsjson`` -- by default
200k decisions x 3 slots x 20 candidate collections, context 10 features in
3 groups, 6 features per collection in 2 groups, 2 slot features (the shapes
of bench/workload.py) -- and measures events (decisions) per second of

  read_joined   ``bandit.logformat.events.read_joined``: JSON lines -> JoinedEvent objects
  load_log      ``simulator.replay.load_log``: the same plus the replay arrays
  vw            ``python -m vowpalwabbit --dsjson --ccb_explore_adf -d FILE``
                (VW parses *and learns*; it prints progress to stderr)
  vw_quiet      the same with ``--quiet``
  vw_test       ``-t``: no learning (VW still predicts every slot)
  vw_test_quiet ``-t --quiet``
  vw_noop       ``--noop -t --quiet``: VW's do-nothing base learner under the
                ccb reduction -- the closest VW gets to parsing alone
Quiet variants print no example count; the non-quiet ones show VW read
every decision.

VW runs are whole processes; the start-up cost (interpreter, import, a
workspace on a one-line file) is measured too and subtracted in the
"net" column. Every variant runs ``--repeats`` times, interleaved; the median
is reported. Ratios are against ``read_joined`` from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bandit.logformat.events import (
    DecisionEvent,
    JoinedEvent,
    dumps,
    joined_to_dsjson,
    read_joined,
)
from bandit.features import FeatureGroup
from bandit.decision import DecisionInput, SlotChoice
from bench.report import log, publish
from bench.workload import COUNTRIES, DEVICES, LOYALTY, SEGMENTS, make_workload

RESULTS = Path(__file__).parent / "results"


def make_events(decisions: int, slots: int, candidates: int, seed: int):
    """Seeded joined events: one catalog of ``candidates`` collections, a fresh
    context per decision, ``slots`` distinct collections drawn from a softmax
    logger (each slot's propensity conditioned on the earlier slots)."""
    w = make_workload(candidates, slots, seed)
    cands = w.candidate_tuple()
    slot_specs = w.slot_tuple()
    rng = random.Random(seed)
    pref = [rng.uniform(0.0, 2.0) for _ in range(candidates)]
    for i in range(decisions):
        context = (
            FeatureGroup("user", {"segment": rng.choice(SEGMENTS), "age": round(rng.uniform(0.1, 0.9), 4),
                                  "tenure_days": float(rng.randint(1, 2000)), "loyalty": rng.choice(LOYALTY)}),
            FeatureGroup("session", {"device": rng.choice(DEVICES), "hour": float(rng.randint(0, 23)),
                                     "pages_viewed": float(rng.randint(1, 40))}),
            FeatureGroup("geo", {"country": rng.choice(COUNTRIES), "region": f"r{rng.randint(1, 30)}",
                                 "distance_km": round(rng.uniform(0, 500), 2)}),
        )
        inp = DecisionInput(context, slot_specs, cands)
        used: list[int] = []
        choices, rewards = [], []
        for k in range(slots):
            avail = inp.available(k, used)
            weights = [2.718281828 ** pref[a] for a in avail]
            total = sum(weights)
            probs = [x / total for x in weights]
            a = rng.choices(avail, weights=probs)[0]
            ranking = tuple(sorted(zip(avail, probs), key=lambda ap: -ap[1]))
            choices.append(SlotChoice(slot_specs[k].id, a, probs[avail.index(a)], ranking))
            rewards.append(1.0 if rng.random() < 0.05 + 0.1 * pref[a] / 2 else 0.0)
            used.append(a)
        decision = DecisionEvent(f"ev-{seed}-{i:08d}", 1.7e9 + i, "default", "online", "1", inp, tuple(choices))
        yield JoinedEvent(decision, tuple(rewards), (True,) * slots, tuple((r,) for r in rewards))


def write_log(path: Path, decisions: int, slots: int, candidates: int, seed: int) -> Path:
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with open(tmp, "w", encoding="utf-8") as fh:
        for j, e in enumerate(make_events(decisions, slots, candidates, seed)):
            fh.write(dumps(joined_to_dsjson(e)) + "\n")
            if (j + 1) % 50_000 == 0:
                log(f"  wrote {j + 1:,}")
    tmp.rename(path)
    return path


def count_read_joined(path: Path) -> int:
    return sum(1 for _ in read_joined([path]))


def count_load_log(path: Path) -> int:
    from simulator.replay.logarrays import load_log

    return load_log([path]).n


OURS = {"read_joined": count_read_joined, "load_log": count_load_log}


def child(variant: str, path: Path) -> None:
    """Run one of our readers in this (fresh) process; print count, seconds, peak RSS."""
    import resource

    t0 = time.perf_counter()
    n = OURS[variant](path)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"events": n, "seconds": seconds, "max_rss_mb": rss}))


def run_ours(variant: str, path: Path) -> dict[str, Any]:
    """Our reader in a child process (so its memory and GC state are its own);
    the time is measured inside, without interpreter start-up and imports."""
    proc = subprocess.run([sys.executable, "-m", "bench.parsing", "--child", variant, "--log", str(path)],
                          capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prefix_file(path: Path, lines: int) -> Path:
    """The first ``lines`` lines of ``path`` (cached)."""
    out = path.with_name(f"{path.stem}-first{lines}.dsjson")
    if not out.is_file():
        with open(path, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
            for _, line in zip(range(lines), src):
                dst.write(line)
    return out


def vw_command(path: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "vowpalwabbit", "--dsjson", "--ccb_explore_adf", "-d", str(path), *extra]


def run_vw(path: Path, extra: list[str]) -> int:
    """Run VW; return the number of examples it reports (0 if not found)."""
    proc = subprocess.run(vw_command(path, extra), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"vw {' '.join(extra)} failed: {proc.stderr[-2000:]}")
    for line in proc.stderr.splitlines():
        if line.startswith("number of examples"):
            return int(line.split("=")[1].strip())
    return 0


VW_VARIANTS = {"vw": [], "vw_quiet": ["--quiet"], "vw_test": ["-t"], "vw_test_quiet": ["-t", "--quiet"],
               "vw_noop": ["--noop", "-t", "--quiet"]}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict[str, Any]:
    name = f"joined-{args.decisions}x{args.slots}x{args.candidates}-s{args.seed}.dsjson"
    path = args.log or (RESULTS / name)
    log(f"log {path} ...")
    _, gen_s = timed(lambda: write_log(path, args.decisions, args.slots, args.candidates, args.seed))
    with open(path, "rb") as fh:
        decisions = sum(1 for _ in fh)
    size = path.stat().st_size
    log(f"  {decisions:,} decisions, {size / 1e6:.0f} MB ({gen_s:.1f} s to write or find)")
    one = prefix_file(path, 1)
    import vowpalwabbit

    info = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
            "vowpalwabbit": vowpalwabbit.__version__, "cores": len(os.sched_getaffinity(0)),
            "loadavg_start": os.getloadavg(), "file": str(path), "bytes": size, "decisions": decisions,
            "slots": args.slots, "candidates": args.candidates, "seed": args.seed, "repeats": args.repeats}
    # (file, decisions in it, bytes) per variant: load_log keeps every event in memory
    # (~40 KB per decision at 20 x 3), so it reads a prefix of at most --load-log-max lines.
    files: dict[str, tuple[Path, int, int]] = {}
    for v in args.variants:
        if v == "load_log" and args.load_log_max and decisions > args.load_log_max:
            pre = prefix_file(path, args.load_log_max)
            files[v] = (pre, args.load_log_max, pre.stat().st_size)
        else:
            files[v] = (path, decisions, size)
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    startup: list[float] = []
    for r in range(args.repeats):
        for v in args.variants:
            log(f"round {r + 1}/{args.repeats}: {v} on {files[v][1]:,} decisions ...")
            if v in OURS:
                out = run_ours(v, files[v][0])
            else:
                n, s = timed(lambda: run_vw(files[v][0], VW_VARIANTS[v]))
                out = {"events": n, "seconds": s}
            results[v].append(out)
            log(f"  {json.dumps(out)}")
        if any(v in VW_VARIANTS for v in args.variants):
            _, s = timed(lambda: run_vw(one, ["-t", "--quiet"]))
            startup.append(s)
    start_s = statistics.median(startup) if startup else 0.0
    rows = []
    for v, outs in results.items():
        f, n, nbytes = files[v]
        med = statistics.median(o["seconds"] for o in outs)
        net = med - start_s if v in VW_VARIANTS else med
        rows.append({"variant": v, "decisions": n, "median_s": med, "all_s": [o["seconds"] for o in outs],
                     "events": max(o["events"] for o in outs), "net_s": net, "net_events_per_s": n / net,
                     "MB_per_s": nbytes / 1e6 / net,
                     "max_rss_mb": max((o.get("max_rss_mb", 0.0) for o in outs), default=0.0) or None})
    base = next((r for r in rows if r["variant"] == "read_joined"), None)
    for r in rows:
        r["ratio_vs_read_joined"] = r["net_events_per_s"] / base["net_events_per_s"] if base else None
    info["vw_startup_s"] = start_s
    info["loadavg_end"] = os.getloadavg()
    return {"machine": info, "rows": rows}


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    out = [f"{m['decisions']:,} decisions x {m['slots']} slots x {m['candidates']} collections, "
           f"{m['bytes'] / 1e6:.0f} MB; vowpalwabbit {m['vowpalwabbit']}; {m['cores']} cores; median of "
           f"{m['repeats']}; VW process start-up {m['vw_startup_s']:.2f} s subtracted in 'net' (ours are timed "
           f"inside the process); load average {m['loadavg_start'][0]:.1f} -> {m['loadavg_end'][0]:.1f}", "",
           "| variant | decisions | median s | net s | events/s (net) | MB/s | x read_joined | peak RSS MB "
           "| events counted |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        ratio = "" if r["ratio_vs_read_joined"] is None else f"{r['ratio_vs_read_joined']:.2f}"
        rss = f"{r['max_rss_mb']:.0f}" if r.get("max_rss_mb") else "-"
        out.append(f"| {r['variant']} | {r['decisions']:,} | {r['median_s']:.1f} | {r['net_s']:.1f} | "
                   f"{r['net_events_per_s']:,.0f} | {r['MB_per_s']:.1f} | {ratio} | {rss} | "
                   f"{r['events'] or '- (quiet)'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decisions", type=int, default=200_000)
    p.add_argument("--slots", type=int, default=3)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds; the median is reported")
    p.add_argument("--variants", default="read_joined,load_log," + ",".join(VW_VARIANTS),
                   help="comma-separated subset of read_joined,load_log," + ",".join(VW_VARIANTS))
    p.add_argument("--log", type=Path, default=None,
                   help="use this joined log instead of generating one")
    p.add_argument("--load-log-max", type=int, default=50_000,
                   help="load_log reads at most this many decisions (a prefix file; it holds every event in "
                        "memory); 0: the whole log")
    p.add_argument("--json-out", type=Path, default=RESULTS / "parsing.json")
    p.add_argument("--child", choices=sorted(OURS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.log)
        return 0
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    res = run(args)
    return publish(res, args.json_out, markdown)


if __name__ == "__main__":
    sys.exit(main())
