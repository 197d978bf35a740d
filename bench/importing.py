"""`placement import` throughput: ``.venv/bin/python -m bench.importing``.

Writes (once, cached by its parameters) a seeded tabular log: one row per
decision, 10 context columns (5 numeric with ~10 % empty cells, 5
categorical), a chosen collection out of ``--collections``, its propensity,
a 0/1 reward, an epoch timestamp and a position column (``--positions``), as
CSV and as Parquet. Then runs the real command, ``placement import FILE
--out OUT.json --slot pos ...``, as a whole process, on each file, with the
vectorised path (the default) and -- on the first ``--row-level-rows`` rows
only, it is ~100x slower -- the row-level path
(``PLACEMENT_IMPORT_ROW_LEVEL=1`` is not a knob: the bench calls
``import_log(..., vectorised=False)`` in a child process instead).

Reports rows/s (wall and CPU of the child), output bytes per row; runs are
alternated ``--repeats`` times and the median is shown. Record runs in
BENCHMARKS.md with the command, commit and load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.procs import run_timed
from bench.report import log, publish

RESULTS = Path(__file__).parent / "results"
CACHE = Path(os.environ.get("BENCH_CACHE", "/tmp/placement-bench"))
CONTEXT = "user:n0,user:n1,user:n2,user:c0,user:c1,page:n3,page:n4,page:c2,page:c3,c4"
MAPPING = ["--action", "item", "--reward", "click", "--propensity", "pscore", "--timestamp", "ts",
           "--slot", "pos", "--context", CONTEXT]


def make_table(rows: int, collections: int, positions: int, seed: int) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "item": rng.integers(0, collections, rows).astype(str),
        "pscore": np.round(rng.uniform(0.01, 0.2, rows), 6),
        "click": (rng.random(rows) < 0.05).astype(int),
        "ts": 1714557600 + np.sort(rng.uniform(0, 86400 * 7, rows)).round(3),
        "pos": rng.integers(1, positions + 1, rows),
    })
    for j in range(5):
        values = rng.normal(size=rows).round(4)
        table[f"n{j}"] = np.where(rng.random(rows) < 0.1, np.nan, values)
    for j in range(5):
        table[f"c{j}"] = rng.choice([f"v{k}" for k in range(5 + 10 * j)], rows)
    return table


def files(args: argparse.Namespace) -> dict[str, Path]:
    stem = CACHE / f"import-{args.rows}-{args.collections}-{args.positions}-{args.seed}"
    out = {"csv": stem.with_suffix(".csv"), "parquet": stem.with_suffix(".parquet")}
    if not all(p.is_file() for p in out.values()):
        CACHE.mkdir(parents=True, exist_ok=True)
        log(f"writing {args.rows:,} rows as CSV and Parquet under {CACHE} ...")
        table = make_table(args.rows, args.collections, args.positions, args.seed)
        table.to_csv(out["csv"], index=False)
        table.to_parquet(out["parquet"], index=False)
    return out


ROW_LEVEL = """
import sys
from pathlib import Path
from bandit.logformat.tabular import build_mapping, import_log
args = sys.argv[1:]
src, out, rows = Path(args[0]), Path(args[1]), int(args[2])
flags = dict(zip([a[2:] for a in args[3::2]], args[4::2]))
import pandas as pd
part = out.with_suffix(".part.csv")
pd.read_csv(src, nrows=rows, dtype=str, keep_default_na=False).to_csv(part, index=False)
import_log(part, out, build_mapping(None, **flags), vectorised=False)
"""


def run_once(kind: str, src: Path, out: Path, row_level_rows: int) -> dict[str, float]:
    """One whole-process import; wall and child CPU seconds."""
    if kind == "row-level":
        flags = [f for pair in zip(MAPPING[::2], MAPPING[1::2]) for f in pair]
        cmd = [sys.executable, "-c", ROW_LEVEL, str(src), str(out), str(row_level_rows), *flags]
    else:
        cmd = [sys.executable, "-m", "placement_cli", "import", str(src), "--out", str(out), *MAPPING]
    timed = run_timed(cmd, f"{kind} import")
    return {"wall_s": timed["wall_s"], "cpu_s": timed["cpu_s"], "bytes": out.stat().st_size}


def run(args: argparse.Namespace) -> dict[str, Any]:
    paths = files(args)
    info = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
            "cores": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg(), "rows": args.rows,
            "collections": args.collections, "positions": args.positions, "seed": args.seed,
            "row_level_rows": args.row_level_rows, "repeats": args.repeats}
    variants = [("csv", "vectorised"), ("parquet", "vectorised"), ("csv", "row-level")]
    samples: dict[tuple[str, str], list[dict[str, float]]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for fmt, kind in variants:
            out = CACHE / f"out-{fmt}-{kind}.json"
            res = run_once(kind, paths[fmt], out, args.row_level_rows)
            samples[(fmt, kind)].append(res)
            n = args.rows if kind == "vectorised" else min(args.rows, args.row_level_rows)
            log(f"  round {r + 1}: {fmt} {kind}: {res['wall_s']:.1f} s wall, {n / res['wall_s']:,.0f} rows/s")
    rows_out = []
    for (fmt, kind), runs in samples.items():
        n = args.rows if kind == "vectorised" else min(args.rows, args.row_level_rows)
        wall = statistics.median(s["wall_s"] for s in runs)
        cpu = statistics.median(s["cpu_s"] for s in runs)
        rows_out.append({"input": fmt, "path": kind, "rows": n, "wall_s": wall, "cpu_s": cpu,
                         "rows_per_s": n / wall, "rows_per_cpu_s": n / cpu,
                         "bytes_per_row": runs[0]["bytes"] / n})
    info["loadavg_end"] = os.getloadavg()
    return {"machine": info, "rows": rows_out}


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    out = [f"{m['rows']:,} rows, 10 context columns, {m['collections']} collections, {m['positions']} positions; "
           f"{m['cores']} cores; median of {m['repeats']} alternating runs; load average "
           f"{m['loadavg_start'][0]:.1f} -> {m['loadavg_end'][0]:.1f}", "",
           "| input | path | rows | wall s | CPU s | rows/s (wall) | rows/CPU-s | output bytes/row |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        out.append(f"| {r['input']} | {r['path']} | {r['rows']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                   f"{r['rows_per_s']:,.0f} | {r['rows_per_cpu_s']:,.0f} | {r['bytes_per_row']:.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--collections", type=int, default=10)
    p.add_argument("--positions", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--row-level-rows", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json-out", type=Path, default=RESULTS / "importing.json")
    args = p.parse_args(argv)
    return publish(run(args), args.json_out, markdown)


if __name__ == "__main__":
    sys.exit(main())
