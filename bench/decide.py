"""The Decide benchmark suite: ``.venv/bin/python -m bench.decide [--quick]``.

Measures, on identical seeded requests (candidates x slots), decisions per
second of
  A         bare VW predict on pre-parsed examples (one multi-slot ccb predict: the limit)
  B         a hand-written pyvw loop: build text, ws.predict(lines), draw
  C_policy  Policy.decide alone
  C         Engine.decide(DecideCall) with a real data dir (event log, joiner)
  C_catalog Engine.decide with the candidates from the catalog
  D         placement serve over gRPC on loopback: max throughput (closed loop),
            then p50/p90/p99 at 50/70/90 % of it (open loop, fixed rate)
  G         the ceiling of the gRPC layer: a trivial call through the real
            server's gRPC setup (bench.ceiling), interceptors on and off, with
            the config's request bytes and a fixed response of its Decide
            response's bytes, same load generator, closed loop
  L         1 / (1/A + 1/G): bare VW plus an empty call, the most one serving
            process could do
and prints the ratios C/A, D/A, C/B, D/L (and worker scaling when ``placement serve``
has ``--workers``), decisions per server CPU-second for each topology, checked
against the targets for 50 candidates x 3 slots.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bandit.vwargs import FILLS, LearningSettings

TARGET_CONFIG = "50x3"
TARGET_D_PER_CORE = 0.8  # D (all workers) per core >= 0.8 x A
TARGET_C_OVER_B = 1.5  # C >= 1.5 x B
TARGET_P99_MS = 5.0  # p99 at 70 % of max
TARGET_D_OVER_L = 0.8  # one worker D >= 0.8 x L (issue 15)
TARGET_CPU_ALL_OVER_ONE = 0.9  # decisions per server CPU-second, all workers >= 0.9 x one worker
TARGET_C_OVER_C_POLICY = 0.9  # logging, joining and bookkeeping cost <= 10 % of the policy
INPROC = ("A", "B", "C_policy", "C", "C_catalog")
PINNED = {False: "", True: "_pinned"}  # the suffix of a pinned server's keys (D, G, ratios, targets)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import grpc
    import vowpalwabbit

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    return {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "nproc": os.cpu_count(),
            "cpu": cpu, "python": platform.python_version(), "vowpalwabbit": vowpalwabbit.__version__,
            "grpcio": grpc.__version__, "loadavg_start": os.getloadavg(), "platform": platform.platform(), "commit": commit}


def parse_configs(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        c, s = item.lower().split("x")
        out.append((int(c), int(s)))
    return out


def parse_workers(text: str, nproc: int, supported: bool) -> list[int | None]:
    """``None`` means: do not pass --workers (the server's single process)."""
    if not supported:
        return [None]
    out: list[int | None] = []
    for item in text.split(","):
        n = nproc if item.strip() == "all" else int(item)
        if n not in out:
            out.append(n)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.decide", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~1 minute smoke run (10x1 and 50x3, short windows)")
    ap.add_argument("--seed", type=int, default=7, help="seed of the request and of every draw [7]")
    ap.add_argument("--configs", help="candidates x slots list [10x1,10x3,50x1,50x3,200x1,200x3]")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per in-process variant (median) [5]")
    ap.add_argument("--seconds", type=float, help="seconds per in-process round [0.6]")
    ap.add_argument("--workers", default="1,all",
                    help="server worker counts, passed as 'placement serve --workers N' when that flag "
                         "exists ('all' = nproc); without the flag one process is measured [1,all]")
    ap.add_argument("--clients", type=int, default=max(2, os.cpu_count() or 2),
                    help="load-generator processes, each with its own channel [nproc, at least 2]")
    ap.add_argument("--concurrency", type=int, default=4, help="closed loop: calls in flight per client [4]")
    ap.add_argument("--grpc-seconds", type=float, help="seconds per gRPC measurement window [4]")
    ap.add_argument("--grpc-configs", help="configs measured through gRPC [all of --configs]")
    ap.add_argument("--server-gc-off", action="store_true",
                    help="diagnosis: run the server with Python's cyclic GC disabled (not a supported setting)")
    ap.add_argument("--fill", choices=FILLS,
                    help="the surface's slot fill, in-process and in the server's config [the default]")
    ap.add_argument("--pin", choices=("off", "on", "both"), default="both",
                    help="servers unpinned, pinned ('placement serve --pin-cpus'; G pinned likewise), "
                         "or both side by side [both]")
    ap.add_argument("--no-grpc", action="store_true", help="skip D and G")
    ap.add_argument("--no-ceiling", action="store_true", help="skip G (and L)")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "latest.json",
                    help="where to write the raw results [bench/results/latest.json]")
    args = ap.parse_args(argv)

    quick = args.quick
    configs = parse_configs(args.configs or ("10x1,50x3" if quick else "10x1,10x3,50x1,50x3,200x1,200x3"))
    grpc_configs = parse_configs(args.grpc_configs) if args.grpc_configs else (
        [(50, 3)] if quick else configs)
    rounds = args.rounds or (1 if quick else 5)
    seconds = args.seconds or (0.5 if quick else 0.6)
    grpc_seconds = args.grpc_seconds or (2.0 if quick else 4.0)
    warmup = 0.5 if quick else 1.0
    pins = {"off": (False,), "on": (True,), "both": (False, True)}[args.pin]

    from bench.grpc_load import measure_ceiling, measure_server, serve_supports_workers
    from bench.inproc import inproc_variants, measure_interleaved, use_fill
    from bench.workload import make_workload

    config = None
    if args.fill:
        use_fill(args.fill)
        config = Path(tempfile.mkdtemp(prefix="bench-decide-")) / "serve.toml"
        atexit.register(shutil.rmtree, config.parent, True)
        config.write_text(f'[surfaces.default.learning]\nfill = "{args.fill}"\n')
    info = machine()
    has_workers = serve_supports_workers()
    workers = parse_workers(args.workers, info["nproc"], has_workers)
    info["serve_has_workers"] = has_workers
    log(f"machine: {info['nproc']} x {info['cpu']}, Python {info['python']}, VW {info['vowpalwabbit']}, "
        f"grpcio {info['grpcio']}; placement serve --workers: {'yes' if has_workers else 'no (one process)'}")
    t_start = time.monotonic()
    results = {"machine": info, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "settings": {"rounds": rounds, "seconds": seconds, "grpc_seconds": grpc_seconds, "warmup": warmup},
               "configs": {}}
    for cands, slots in configs:
        w = make_workload(cands, slots, args.seed)
        names = list(INPROC)
        log(f"{w.label}: in-process {', '.join(names)} ({rounds} x {seconds}s each)")
        variants = inproc_variants(w, args.seed, names)
        try:
            rates = measure_interleaved(variants, rounds, seconds)
        finally:
            for v in variants.values():
                v.close()
        for name, r in rates.items():
            log(f"    {name:9s} {r['rate']:9.1f}/s  (min {r['min']:.1f}, max {r['max']:.1f})")
        entry = {"inproc": rates, "grpc": {}}
        if not args.no_grpc and (cands, slots) in grpc_configs:
            for pinned in pins:
                for n in workers:
                    key = ("1proc" if n is None else f"w{n}") + PINNED[pinned]
                    log(f"{w.label}: gRPC, {'one process' if n is None else f'--workers {n}'}"
                        f"{', --pin-cpus' if pinned else ''}, {args.clients} clients x {args.concurrency} in flight")
                    entry["grpc"][key] = measure_server(
                        w.request_bytes(), slots, n, args.clients, args.concurrency, grpc_seconds, grpc_seconds,
                        warmup, (0.5, 0.7, 0.9), log=log, gc_off=args.server_gc_off, config=config, pinned=pinned)
                    entry["grpc"][key].update(workers=n or 1, pinned=pinned)
                    response = entry["grpc"][key].pop("response")
            if not args.no_ceiling:
                entry["ceiling"] = {}
                for pinned in pins:
                    for on in (True, False):
                        log(f"{w.label}: G, trivial call, interceptors {'on' if on else 'off'}"
                            f"{', pinned' if pinned else ''}, {len(w.request_bytes())} B request, "
                            f"{len(response)} B response")
                        entry["ceiling"][("on" if on else "off") + PINNED[pinned]] = measure_ceiling(
                            w.request_bytes(), response, slots, on, args.clients, args.concurrency, grpc_seconds,
                            warmup, log=log, pinned=pinned)
        results["configs"][w.label] = entry
    results["elapsed_seconds"] = time.monotonic() - t_start
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["command"] = " ".join([".venv/bin/python -m bench.decide", *(argv if argv is not None else sys.argv[1:])])
    results["summary"] = summarise(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(report(results))
    log(f"raw results: {args.json}  ({results['elapsed_seconds']:.0f} s)")
    return 0


def _variants(entry: dict) -> dict[str, dict]:
    """The gRPC runs by pinning: key suffix ('' unpinned) -> {key: run}."""
    out: dict[str, dict] = {}
    for key, g in entry["grpc"].items():
        out.setdefault(PINNED[g.get("pinned", False)], {})[key] = g
    return out


def _most_workers(runs: dict) -> str:
    return max(runs, key=lambda k: runs[k]["workers"])


def summarise(results: dict) -> dict:
    nproc = results["machine"]["nproc"]
    out = {}
    for label, entry in results["configs"].items():
        r = {k: v["rate"] for k, v in entry["inproc"].items()}
        row = {"C/A": r["C"] / r["A"], "C/B": r["C"] / r["B"], "C_policy/A": r["C_policy"] / r["A"],
               "C_policy/B": r["C_policy"] / r["B"], "C/C_policy": r["C"] / r["C_policy"],
               "C_catalog/B": r["C_catalog"] / r["B"], "B/A": r["B"] / r["A"]}
        for suffix, runs in _variants(entry).items():
            g = runs[_most_workers(runs)]
            cores = min(g["workers"], nproc)
            row["D/A" + suffix] = g["max"]["rate"] / r["A"]
            row["D_per_core/A" + suffix] = g["max"]["rate"] / cores / r["A"]
            row["D/C" + suffix] = g["max"]["rate"] / r["C"]
            row["D_workers" + suffix] = g["workers"]
            lat70 = [x for x in g["latency"] if abs(x["fraction"] - 0.7) < 1e-9]
            if lat70:
                row["p99_ms_at_70" + suffix] = lat70[0]["p99_ms"]
            singles = [v for v in runs.values() if v["workers"] == 1]
            if singles and g["workers"] > 1:
                row["worker_scaling" + suffix] = g["max"]["rate"] / singles[0]["max"]["rate"]
                row["p99_ms_at_70_one" + suffix] = next(
                    (x["p99_ms"] for x in singles[0]["latency"] if abs(x["fraction"] - 0.7) < 1e-9), float("nan"))
        row.update(ceiling_ratios(r["A"], entry))
        out[label] = row
    target = out.get(TARGET_CONFIG)
    if target:
        out["targets"] = _targets(target, results["configs"][TARGET_CONFIG])
    return out


def _targets(target: dict, entry: dict) -> dict:
    """Issue 15's targets at the target config, for each pinning measured."""
    checks = {"C >= 1.5 x B": (target["C/B"], TARGET_C_OVER_B, "ge"),
              "C >= 0.9 x C_policy": (target["C/C_policy"], TARGET_C_OVER_C_POLICY, "ge")}
    for suffix, runs in _variants(entry).items():
        tag = " (pinned)" if suffix else ""
        checks["D (all workers) per core >= 0.8 x A" + tag] = (target["D_per_core/A" + suffix], TARGET_D_PER_CORE, "ge")
        for key in ("p99_ms_at_70_one", "p99_ms_at_70"):
            if key + suffix in target:
                who = "one worker" if key.endswith("one") else "all workers"
                checks[f"p99 <= 5 ms at 70 % of max, {who}{tag}"] = (target[key + suffix], TARGET_P99_MS, "le")
        one = next((k for k in runs if runs[k]["workers"] == 1), None)
        if one and f"D/L_{one}" in target:
            checks["one worker D >= 0.8 x L" + tag] = (target[f"D/L_{one}"], TARGET_D_OVER_L, "ge")
        if "D_cpu_all/one" + suffix in target:
            checks["D per server CPU-second, all workers >= 0.9 x one" + tag] = (
                target["D_cpu_all/one" + suffix], TARGET_CPU_ALL_OVER_ONE, "ge")
    out = {}
    for name, (value, goal, kind) in checks.items():
        ok = value >= goal if kind == "ge" else value <= goal
        factor = goal / value if kind == "ge" else value / goal  # how far off (>1 = missing)
        out[name] = {"value": value, "goal": goal, "met": ok, "off_by_factor": factor}
    return out


def _ceiling(a: float, g: float) -> float:
    """L: one bare-VW predict and one empty gRPC call, back to back."""
    return 1.0 / (1.0 / a + 1.0 / g)


def ceiling_ratios(a: float, entry: dict) -> dict:
    """G, L and D / L per topology, in wall-clock rates and per server
    CPU-second, a pinned server against a pinned G. A runs on one busy
    thread, so its rate is also its rate per CPU-second; per CPU-second
    figures are the honest ones when the load generator and the coordinator
    share the cores with the server."""
    row: dict = {}
    ceiling = entry.get("ceiling") or {}
    for suffix, runs in _variants(entry).items():
        for key, g in runs.items():
            cores = g["max"]["server_cores"]
            row[f"D_cpu_{key}"] = g["max"]["rate"] / cores if cores else float("nan")
        singles = [k for k, g in runs.items() if g["workers"] == 1]
        multi = _most_workers(runs)
        if singles and multi not in singles:
            row["D_cpu_all/one" + suffix] = row[f"D_cpu_{multi}"] / row[f"D_cpu_{singles[0]}"]
        on, off = ceiling.get("on" + suffix), ceiling.get("off" + suffix)
        if not (on and off):
            continue
        row["G_on" + suffix], row["G_off" + suffix] = on["rate"], off["rate"]
        row["G_cpu_on" + suffix], row["G_cpu_off" + suffix] = on["per_cpu_second"], off["per_cpu_second"]
        row["G_on/G_off" + suffix] = on["rate"] / off["rate"]
        row["L" + suffix], row["L_cpu" + suffix] = _ceiling(a, on["rate"]), _ceiling(a, on["per_cpu_second"])
        for key, g in runs.items():
            row[f"D/L_{key}"] = g["max"]["rate"] / row["L" + suffix]
            row[f"D_cpu/L_cpu_{key}"] = row[f"D_cpu_{key}"] / row["L_cpu" + suffix]
    return row


def _load(avg) -> str:
    return "/".join(f"{x:.1f}" for x in avg) if avg else "?"


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def report(results: dict) -> str:
    m = results["machine"]
    lines = [f"## Decide benchmark ({m['date']}, commit {m['commit']})", "",
             f"Machine: {m['nproc']} x {m['cpu']}; Python {m['python']}; VW {m['vowpalwabbit']}; "
             f"grpcio {m['grpcio']}; `placement serve --workers`: {'yes' if m['serve_has_workers'] else 'no'}",
             f"Load average (1/5/15 min) at start {_load(m.get('loadavg_start'))}, at end {_load(m.get('loadavg_end'))}"
             " (other work on the machine skews absolute numbers; compare ratios within one run)",
             ""]
    st, a = results["settings"], results["args"]
    lines += [f"Command: `{results['command']}`",
              f"Settings: seed {a['seed']}; in-process {st['rounds']} interleaved rounds x {st['seconds']} s (median); "
              f"gRPC {a['clients']} client processes, {a['concurrency']} in flight each for max, "
              f"{st['grpc_seconds']} s windows after {st['warmup']} s warm-up; "
              f"fill {a.get('fill') or 'the default (' + LearningSettings().fill + ')'}"
              + ("; SERVER GC DISABLED (diagnosis)" if a.get("server_gc_off") else ""),
              "", "### Throughput (decisions/s, median of interleaved rounds)", ""]
    grpc_keys = sorted({k for e in results["configs"].values() for k in e["grpc"]})
    head = ["config", *INPROC, *[f"D {k}" for k in grpc_keys]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, e in results["configs"].items():
        cells = [label] + [_fmt(e["inproc"][n]["rate"]) if n in e["inproc"] else "–" for n in INPROC]
        cells += [_fmt(e["grpc"][k]["max"]["rate"]) if k in e["grpc"] else "–" for k in grpc_keys]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "### Ratios", ""]
    cols = ["C/A", "D/A", "C/B", "C_policy/A", "C/C_policy", "C_catalog/B", "B/A", "D_per_core/A",
            "worker_scaling", "D/A_pinned", "D_per_core/A_pinned", "worker_scaling_pinned"]
    summary = results["summary"]
    present = [c for c in cols if any(c in row for k, row in summary.items() if k != "targets")]
    lines += ["| config | " + " | ".join(present) + " |", "|---|" + "---|" * len(present)]
    for label, row in summary.items():
        if label == "targets":
            continue
        lines.append(f"| {label} | " + " | ".join(f"{row[c]:.2f}" if c in row else "–" for c in present) + " |")
    lines += ceiling_report(results)
    lat_rows = [(label, k, g) for label, e in results["configs"].items() for k, g in e["grpc"].items()]
    if lat_rows:
        lines += ["", "### gRPC latency, open loop at a fixed rate (ms; from the scheduled send time)", "",
                  "| config | server | max/s (in flight) | server cores at max | load | rate/s | p50 | p90 | p99 | errors "
                  "| RSS MiB per process |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, k, g in lat_rows:
            rss = ", ".join(f"{r:.0f}" for r in g.get("rss_mib", []))
            for x in g["latency"]:
                lines.append(f"| {label} | {k} | {_fmt(g['max']['rate'])} ({g['max']['in_flight']}) | "
                             f"{g['max']['server_cores']:.2f} | {x['fraction']:.0%} | {x['achieved_rate']:.0f} | "
                             f"{x['p50_ms']:.2f} | {x['p90_ms']:.2f} | {x['p99_ms']:.2f} | {x['errors']} | {rss} |")
    targets = summary.get("targets")
    if targets:
        lines += ["", f"### Targets ({TARGET_CONFIG})", ""]
        for name, t in targets.items():
            verdict = "met" if t["met"] else f"NOT met (off by {t['off_by_factor']:.1f}x)"
            lines.append(f"- {name}: {t['value']:.2f} vs {t['goal']:g} -> {verdict}")
        if not m["serve_has_workers"]:
            lines.append("- D was measured with the server's single process (`placement serve` has no "
                         "`--workers` yet); 'per core' divides by 1.")
    return "\n".join(lines)


def ceiling_report(results: dict) -> list[str]:
    """The G / L table: the ceiling and how far D is from it, per topology."""
    rows = [(label, e, results["summary"][label]) for label, e in results["configs"].items() if e.get("ceiling")]
    if not rows:
        return []
    lines = ["", "### The ceiling: G (trivial gRPC call), L = 1 / (1/A + 1/G on), D / L", "",
             "Per CPU-second: completions in the max window / server CPU seconds in it (all server processes).", "",
             "| config | req / resp B | A | G on (/CPU-s) | G off (/CPU-s) | L (L per CPU-s) | server | D max "
             "| server cores | D per CPU-s | D / L | D per CPU-s / L per CPU-s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, e, row in rows:
        a = e["inproc"]["A"]["rate"]
        for key, g in e["grpc"].items():
            suffix = PINNED[g.get("pinned", False)]
            on, off = e["ceiling"].get("on" + suffix), e["ceiling"].get("off" + suffix)
            if not (on and off):
                continue
            lines.append(
                f"| {label} | {g['request_bytes']:,} / {g['response_bytes']:,} | {_fmt(a)} | "
                f"{_fmt(on['rate'])} ({_fmt(on['per_cpu_second'])}) | {_fmt(off['rate'])} ({_fmt(off['per_cpu_second'])}) | "
                f"{_fmt(row['L' + suffix])} ({_fmt(row['L_cpu' + suffix])}) | {key} | {_fmt(g['max']['rate'])} | "
                f"{g['max']['server_cores']:.2f} | {_fmt(row[f'D_cpu_{key}'])} | {row[f'D/L_{key}']:.2f} | "
                f"{row[f'D_cpu/L_cpu_{key}']:.2f} |")
        for suffix in PINNED.values():
            if "D_cpu_all/one" + suffix in row:
                lines.append(f"| {label} | | | | | | all / one{suffix} | | | {row['D_cpu_all/one' + suffix]:.2f} | | |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
