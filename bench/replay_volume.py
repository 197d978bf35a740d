"""`placement replay` at production volume, end to end, beside obp:
``.venv/bin/python -m bench.replay_volume --rows 1000000``.

1. A seeded tabular log (bench.importing.make_table: one row per decision, 10
   context columns, ``--collections`` collections, ``--positions`` positions,
   propensities logged) as Parquet, cached; a probabilities file (JSON lines,
   ``probs:FILE``) for a fixed target that leans on the lower collection ids.
2. ``placement import`` it (DSJSON + the columnar copy), whole process, timed.
3. ``placement replay LOG -p uniform -p logged -p probs:FILE -e ... --slate
   none --interval normal -q -j OUT``, whole process, timed (wall and CPU).
   Estimators: ``--estimators`` (default ips,snips; all seven:
   ``dm,ips,snips,dr,sndr,switch-dr,dr-os``).
4. obp, same data, end to end in one process: read the Parquet (pandas), build
   obp's arrays (``action_dist`` (n, A, positions) for uniform and for the
   probabilities target, read from the same JSON lines with pyarrow.json --
   pandas.read_json does not fit 10M lines in memory), fit obp's
   ``RegressionModel`` (a logistic regression per position, 5 folds) when a
   model-based estimator is asked for, and run the same ``--estimators``
   (``DirectMethod``, ``InverseProbabilityWeighting``, ...,
   ``DoublyRobustWithShrinkage``) with normal intervals (``estimate_interval``,
   which bootstraps: ``n_bootstrap_samples`` 10).
   Ours runs twice: with the three targets, and with obp's two (uniform,
   probs) for the side-by-side. The values are compared with ours: obp's is the mean over all rows, ours
   per position (the page is their sum), so ours weighted by each position's
   rows is shown beside it.

Record runs in BENCHMARKS.md with the command, commit and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bandit.logformat.vectorised import lines_bytes
from bench.importing import CACHE, CONTEXT, make_table
from bench.procs import run_timed
from bench.report import log, publish

RESULTS = Path(__file__).parent / "results"


def target_probs(n_collections: int) -> np.ndarray:
    """The fixed probabilities target: softmax leaning on low ids, the same at every position."""
    w = np.exp(-0.3 * np.arange(n_collections))
    return w / w.sum()


def data(args: argparse.Namespace) -> dict[str, Path]:
    stem = CACHE / f"volume-{args.rows}-{args.collections}-{args.positions}-{args.seed}"
    paths = {"parquet": stem.with_suffix(".parquet"), "probs": stem.with_suffix(".probs.jsonl")}
    if not paths["parquet"].is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        log(f"writing {args.rows:,} rows under {CACHE} ...")
        make_table(args.rows, args.collections, args.positions, args.seed).to_parquet(paths["parquet"], index=False)
    if not paths["probs"].is_file():
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc

        table = pd.read_parquet(paths["parquet"], columns=["pos"])
        p = target_probs(args.collections)
        body = json.dumps({str(a): float(p[a]) for a in range(args.collections)})
        pos = table["pos"].to_numpy()
        with open(paths["probs"], "wb") as fh:
            for start in range(0, args.rows, 1_000_000):  # an Arrow string array holds at most 2 GB
                stop = min(args.rows, start + 1_000_000)
                ids = pc.binary_join_element_wise(
                    '{"event_id":"row-', pc.cast(pa.array(np.arange(start + 1, stop + 1)), pa.string()),
                    '","slot_id":"', pc.cast(pa.array(pos[start:stop]), pa.string()),
                    '","probabilities":' + body + "}\n", "")
                fh.write(lines_bytes(ids))
    return paths


def timed(cmd: list[str]) -> dict[str, float]:
    return run_timed(cmd, " ".join(cmd[:4]) + " ...")


OBP = """
import json, sys, time
import numpy as np, pandas as pd
from obp import ope
src, probs, n_col, n_pos, out, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
CLASSES = {"dm": ope.DirectMethod, "ips": ope.InverseProbabilityWeighting,
           "snips": ope.SelfNormalizedInverseProbabilityWeighting, "dr": ope.DoublyRobust,
           "sndr": ope.SelfNormalizedDoublyRobust, "switch-dr": lambda: ope.SwitchDoublyRobust(lambda_=20),
           "dr-os": lambda: ope.DoublyRobustWithShrinkage(lambda_=100)}
wanted = names.split(",")
t0 = time.perf_counter()
df = pd.read_parquet(src)
action = df["item"].astype(int).to_numpy(); reward = df["click"].to_numpy(float)
pscore = df["pscore"].to_numpy(float); position = df["pos"].to_numpy() - 1
n = len(df)
import pyarrow.json as pajson  # pandas.read_json holds every line as Python objects: 10M lines do not fit
wide = pajson.read_json(probs).column("probabilities").combine_chunks()
fixed = np.column_stack([wide.field(str(a)).to_numpy(zero_copy_only=False) for a in range(n_col)]).astype(float)
res = {"load_s": time.perf_counter() - t0}
q = None
if set(wanted) & {"dm", "dr", "sndr", "switch-dr", "dr-os"}:
    # obp's reward model: a logistic regression per position on the context
    # (numbers, NaN as 0; categories as their codes: fewer columns than one-hot,
    # so cheaper for obp than a scientist's usual encoding) and the action
    # one-hot, cross-fitted in 5 folds like ours
    from sklearn.linear_model import LogisticRegression
    cols = [f"n{j}" for j in range(5)]
    ctx = np.column_stack([df[c].fillna(0.0).to_numpy(float) for c in cols] +
                          [df[f"c{j}"].astype("category").cat.codes.to_numpy(float) for j in range(5)])
    t1 = time.perf_counter()
    model = ope.RegressionModel(n_actions=n_col, len_list=n_pos, base_model=LogisticRegression(max_iter=200))
    q = model.fit_predict(context=ctx, action=action, reward=reward, position=position, n_folds=5, random_state=0)
    res["reward_model_s"] = time.perf_counter() - t1
for name, per_row in (("uniform", np.full((n, n_col), 1.0 / n_col)), ("probs", fixed)):
    dist = np.repeat(per_row[:, :, None], n_pos, axis=2)  # obp: a distribution at every position
    for est_name in wanted:
        est = CLASSES[est_name]()
        kw = dict(reward=reward, action=action, position=position, pscore=pscore, action_dist=dist)
        if est_name == "dm":
            kw = dict(position=position, action_dist=dist)
        if q is not None and est_name != "ips" and est_name != "snips":
            kw["estimated_rewards_by_reg_model"] = q
        value = est.estimate_policy_value(**kw)
        ci = est.estimate_interval(**kw, n_bootstrap_samples=10, random_state=0)
        res[f"{name}:{est_name}"] = {"value": float(value), "ci": [float(ci["95.0% CI (lower)"]),
                                                                     float(ci["95.0% CI (upper)"])]}
res["total_s"] = time.perf_counter() - t0
json.dump(res, open(out, "w"))
"""


def ours_values(path: Path) -> dict[str, float]:
    """Our per-position values weighted by their rows: obp's mean over all rows
    (exactly, for IPS; SNIPS normalises per position here, over all rows in obp)."""
    res = json.loads(path.read_text())
    out = {}
    for p in res["policies"]:
        name = "probs" if p["name"].startswith("probs:") else p["name"]
        slots = [e for e in p["estimates"] if e["scope"].startswith("slot:") and "value" in e]
        for est in {e["estimator"] for e in slots}:
            mine = [e for e in slots if e["estimator"] == est]
            out[f"{name}:{est}"] = sum(e["value"] * e["n"] for e in mine) / sum(e["n"] for e in mine)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    paths = data(args)
    out = CACHE / f"volume-{args.rows}.json"
    info = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
            "cores": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg(), "rows": args.rows,
            "collections": args.collections, "positions": args.positions, "seed": args.seed,
            "estimators": args.estimators}
    cli = [sys.executable, "-m", "placement_cli"]
    if args.obp_only:  # ours measured before (its results file is reused for the values)
        return obp_only(args, paths, info)
    log(f"import {args.rows:,} rows ...")
    imp = timed([*cli, "import", str(paths["parquet"]), "--out", str(out), "--action", "item", "--reward", "click",
                 "--propensity", "pscore", "--timestamp", "ts", "--slot", "pos", "--context", CONTEXT])
    log(f"  {imp['wall_s']:.1f} s wall, {imp['cpu_s']:.1f} s CPU")
    est = [f for e in args.estimators.split(",") for f in ("-e", e)]
    result = CACHE / f"volume-{args.rows}.results.json"
    log("replay ...")
    rep = timed([*cli, "replay", str(out), "-p", "uniform", "-p", "logged", "-p", f"probs:{paths['probs']}", *est,
                 "--slate", "none", "--interval", "normal", "-q", "-j", str(result)])
    log(f"  {rep['wall_s']:.1f} s wall, {rep['cpu_s']:.1f} s CPU, {rep['max_rss_mb']:.0f} MB")
    rows = [{"what": "placement import", **imp}, {"what": "placement replay (uniform, logged, probs)", **rep}]
    log("replay, obp's two targets ...")
    pair = timed([*cli, "replay", str(out), "-p", "uniform", "-p", f"probs:{paths['probs']}", *est,
                  "--slate", "none", "--interval", "normal", "-q", "-j", str(result) + ".pair"])
    rows.append({"what": "placement replay (uniform, probs: obp's pair)", **pair})
    log(f"  {pair['wall_s']:.1f} s wall, {pair['cpu_s']:.1f} s CPU")
    info["ours"] = ours_values(result)
    if not args.no_obp:
        log("obp ...")
        obp_out = CACHE / f"volume-{args.rows}.obp.json"
        ob = timed([sys.executable, "-c", OBP, str(paths["parquet"]), str(paths["probs"]), str(args.collections),
                    str(args.positions), str(obp_out), args.estimators])
        info["obp"] = json.loads(obp_out.read_text())
        rows.append({"what": f"obp (load + {args.estimators})", **ob})
        log(f"  {ob['wall_s']:.1f} s wall, {ob['cpu_s']:.1f} s CPU")
    info["loadavg_end"] = os.getloadavg()
    return {"machine": info, "rows": rows}


def obp_only(args: argparse.Namespace, paths: dict[str, Path], info: dict[str, Any]) -> dict[str, Any]:
    result = CACHE / f"volume-{args.rows}.results.json"
    info["ours"] = ours_values(result) if result.is_file() else {}
    obp_out = CACHE / f"volume-{args.rows}.obp.json"
    ob = timed([sys.executable, "-c", OBP, str(paths["parquet"]), str(paths["probs"]), str(args.collections),
                str(args.positions), str(obp_out), args.estimators])
    info["obp"] = json.loads(obp_out.read_text())
    info["loadavg_end"] = os.getloadavg()
    return {"machine": info, "rows": [{"what": f"obp (load + {args.estimators})", **ob}]}


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    out = [f"{m['rows']:,} decisions ({m['positions']} positions x {m['collections']} collections, 10 context "
           f"columns); estimators {m['estimators']}; targets uniform, logged, probs:FILE; {m['cores']} cores; load "
           f"average {m['loadavg_start'][0]:.1f} -> {m['loadavg_end'][0]:.1f}", "",
           "| step | wall s | CPU s | max RSS MB |", "|---|---:|---:|---:|"]
    for r in res["rows"]:
        out.append(f"| {r['what']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['max_rss_mb']:.0f} |")
    if "obp" in m:
        out += ["", "| estimate (mean per row) | ours | obp | difference |", "|---|---:|---:|---:|"]
        for key, ob in m["obp"].items():
            if isinstance(ob, dict) and key in m["ours"]:
                out.append(f"| {key} | {m['ours'][key]:.6g} | {ob['value']:.6g} | {m['ours'][key] - ob['value']:.2g} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--collections", type=int, default=10)
    p.add_argument("--positions", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--estimators", default="ips,snips")
    p.add_argument("--no-obp", action="store_true")
    p.add_argument("--obp-only", action="store_true", help="only the obp step (ours from an earlier run's results)")
    p.add_argument("--json-out", type=Path, default=RESULTS / "replay_volume.json")
    args = p.parse_args(argv)
    return publish(run(args), args.json_out, markdown)


if __name__ == "__main__":
    sys.exit(main())
