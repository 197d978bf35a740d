"""Off-policy estimators at scale: ``.venv/bin/python -m bench.estimators``.

Times :mod:`bandit.ope.estimators` (IPS, SNIPS, DR, SNDR, Switch-DR, DRos, DM) on
10 million logged rounds already in memory (10 actions by default): the point
estimate (``Estimator.estimate``: weights, checks, value and the per-round
contributions) and the normal interval on it; the bootstrap interval on a
subsample (full-n bootstrap is extrapolated from a few resamples). Side by side
with Open Bandit Pipeline's ``obp.ope`` estimators on the same arrays
(``action_dist`` viewed as (n, A, 1)): ratio ours/obp per estimator from the
same run, and the difference of the point estimates.

The log is synthetic and seeded: per round a softmax logging policy over A
actions, the logged action drawn from it, a Bernoulli reward, a noisy reward
model q_hat and a softmax target policy that leans toward the better actions.
See bench/README.md; record runs in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bandit.ope import estimators as ours
from bandit.ope.intervals import bootstrap_interval, normal_interval
from bench.report import log, publish

# Same hyperparameters as `placement replay` (simulator.replay.ESTIMATOR_PARAMS).
SWITCH_LAMBDA = 20.0
DROS_LAMBDA = 100.0
NAMES = ("ips", "snips", "dr", "sndr", "switch-dr", "dr-os", "dm")
TOTAL_TARGET_S = 60.0


def make_log(n: int, n_actions: int, seed: int, chunk: int = 1_000_000) -> dict[str, np.ndarray]:
    """A seeded synthetic cb log, generated in chunks to bound temporaries."""
    rng = np.random.default_rng(seed)
    reward = np.empty(n)
    action = np.empty(n, dtype=np.int64)
    pscore = np.empty(n)
    action_dist = np.empty((n, n_actions))
    estimated_rewards = np.empty((n, n_actions))
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        sl = slice(start, start + m)
        rows = np.arange(m)
        q_true = 1.0 / (1.0 + np.exp(-(rng.normal(size=(m, n_actions)) - 1.5)))  # mean ~0.2
        logits = rng.normal(scale=0.7, size=(m, n_actions))
        mu = np.exp(logits - logits.max(axis=1, keepdims=True))
        mu /= mu.sum(axis=1, keepdims=True)
        u = rng.random(m)
        a = np.minimum((mu.cumsum(axis=1) < u[:, None]).sum(axis=1), n_actions - 1)
        action[sl] = a
        pscore[sl] = mu[rows, a]
        reward[sl] = (rng.random(m) < q_true[rows, a]).astype(float)
        estimated_rewards[sl] = np.clip(q_true + rng.normal(scale=0.05, size=(m, n_actions)), 0.0, 1.0)
        t = 4.0 * q_true + rng.normal(scale=0.3, size=(m, n_actions))
        pi = np.exp(t - t.max(axis=1, keepdims=True))
        action_dist[sl] = pi / pi.sum(axis=1, keepdims=True)
    return dict(reward=reward, action=action, pscore=pscore, action_dist=action_dist,
                estimated_rewards=estimated_rewards)


def ours_estimators() -> dict[str, ours.OffPolicyEstimator]:
    return {
        "ips": ours.InverseProbabilityWeighting(),
        "snips": ours.SelfNormalizedInverseProbabilityWeighting(),
        "dr": ours.DoublyRobust(),
        "sndr": ours.SelfNormalizedDoublyRobust(),
        "switch-dr": ours.SwitchDoublyRobust(lambda_=SWITCH_LAMBDA),
        "dr-os": ours.DoublyRobustWithShrinkage(lambda_=DROS_LAMBDA),
        "dm": ours.DirectMethod(),
    }


def obp_estimators() -> dict[str, Any]:
    from obp import ope

    return {
        "ips": ope.InverseProbabilityWeighting(),
        "snips": ope.SelfNormalizedInverseProbabilityWeighting(),
        "dr": ope.DoublyRobust(),
        "sndr": ope.SelfNormalizedDoublyRobust(),
        "switch-dr": ope.SwitchDoublyRobust(lambda_=SWITCH_LAMBDA),
        "dr-os": ope.DoublyRobustWithShrinkage(lambda_=DROS_LAMBDA),
        "dm": ope.DirectMethod(),
    }


def obp_inputs(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """obp's argument names and shapes; (n, A, 1) are views, not copies."""
    return dict(reward=data["reward"], action=data["action"], pscore=data["pscore"],
                action_dist=data["action_dist"][:, :, None],
                estimated_rewards_by_reg_model=data["estimated_rewards"][:, :, None])


def subsample(data: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[:n]) for k, v in data.items()}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
            "numpy": np.__version__, "cores": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg(),
            "n": args.n, "actions": args.actions, "seed": args.seed, "repeats": args.repeats}
    have_obp = not args.no_obp
    if have_obp:
        try:
            import obp

            info["obp"] = obp.__version__
        except ImportError:
            log("obp is not installed: timing ours only (see bench/README.md)")
            have_obp = False
    log(f"generating {args.n:,} rounds x {args.actions} actions (seed {args.seed}) ...")
    data, gen_s = timed(lambda: make_log(args.n, args.actions, args.seed))
    info["generate_s"] = gen_s
    log(f"  {gen_s:.1f} s")
    ours_est = ours_estimators()
    obp_est = obp_estimators() if have_obp else {}
    obp_data = obp_inputs(data) if have_obp else {}
    names = [n for n in NAMES if n in args.estimators]
    samples: dict[str, dict[str, list[float]]] = {n: {"ours_point_s": [], "ours_normal_s": [], "obp_point_s": []}
                                                  for n in names}
    rows: list[dict[str, Any]] = [{"estimator": n} for n in names]
    for rep in range(args.repeats):
        for name, row in zip(names, rows):  # interleaved: ours then obp, estimator by estimator
            t = samples[name]
            log(f"[{rep + 1}/{args.repeats}] {name}: ours ...")
            est, s = timed(lambda: ours_est[name].estimate(**data))
            t["ours_point_s"].append(s)
            row["ours_value"] = float(est.value)
            ci, s = timed(lambda: normal_interval(est, args.level))
            t["ours_normal_s"].append(s)
            row["ours_normal"] = [float(ci.lower), float(ci.upper)]
            del est, ci
            if have_obp:
                log(f"[{rep + 1}/{args.repeats}] {name}: obp ...")
                value, s = timed(lambda: obp_est[name].estimate_policy_value(**obp_data))
                t["obp_point_s"].append(s)
                row["obp_value"] = float(value)
    for name, row in zip(names, rows):
        for key, vals in samples[name].items():
            if vals:
                row[key] = statistics.median(vals)
                row[key.replace("_s", "_all_s")] = vals
        if have_obp:
            row["ratio_point"] = row["ours_point_s"] / row["obp_point_s"]
            row["abs_diff"] = abs(row["ours_value"] - row["obp_value"])
            row["rel_diff"] = row["abs_diff"] / max(abs(row["obp_value"]), 1e-300)
        log(f"  {name}: {json.dumps({k: v for k, v in row.items() if k.endswith('_s') or k.endswith('value')})}")

    # Bootstrap: full n would be n_resamples x (draw n indices + bincount + (n x terms) product).
    boot: list[dict[str, Any]] = []
    if args.boot_n > 0:
        sub = subsample(data, min(args.boot_n, args.n))
        obp_sub = obp_inputs(sub) if have_obp else {}
        for name in names:
            b: dict[str, Any] = {"estimator": name, "n": sub["reward"].size, "resamples": args.boot_resamples}
            log(f"{name}: bootstrap on {b['n']:,} rounds x {args.boot_resamples} resamples ...")
            est = ours_est[name].estimate(**sub)
            ci, b["ours_s"] = timed(lambda: bootstrap_interval(est, args.level, args.boot_resamples, args.seed))
            b["ours"] = [float(ci.lower), float(ci.upper)]
            if have_obp:
                out, b["obp_s"] = timed(lambda: obp_est[name].estimate_interval(
                    **obp_sub, alpha=1 - args.level, n_bootstrap_samples=args.boot_resamples,
                    random_state=args.seed))
                vals = list(out.values())
                b["obp"] = [float(vals[1]), float(vals[2])]
                b["ratio"] = b["ours_s"] / b["obp_s"]
            boot.append(b)
        # Full-n cost, extrapolated from a few resamples of one estimator (the cost is
        # the same for all but DM: one (n x terms) product per resample).
        if args.full_boot_probe > 0:
            name = "snips" if "snips" in names else names[0]
            est = ours_est[name].estimate(**data)
            _, probe_s = timed(lambda: bootstrap_interval(est, args.level, args.full_boot_probe, args.seed))
            info["full_bootstrap_probe"] = {
                "estimator": name, "n": args.n, "resamples": args.full_boot_probe, "seconds": probe_s,
                "extrapolated_s_per_1000": probe_s / args.full_boot_probe * 1000}
            del est
            if have_obp:
                _, probe_obp = timed(lambda: obp_est[name].estimate_interval(
                    **obp_data, n_bootstrap_samples=args.full_boot_probe, random_state=args.seed))
                info["full_bootstrap_probe"]["obp_seconds"] = probe_obp
                info["full_bootstrap_probe"]["obp_extrapolated_s_per_1000"] = (
                    probe_obp / args.full_boot_probe * 1000)
    info["loadavg_end"] = os.getloadavg()
    return {"machine": info, "point": rows, "bootstrap": boot}


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    rows = res["point"]
    have_obp = any("obp_point_s" in r for r in rows)
    out = [f"n = {m['n']:,} rounds, {m['actions']} actions, seed {m['seed']}; {m['cores']} cores; "
           f"median of {m['repeats']} interleaved rounds; numpy {m['numpy']}; obp {m.get('obp', '-')}; load average {m['loadavg_start'][0]:.1f} -> "
           f"{m['loadavg_end'][0]:.1f}; data generation {m['generate_s']:.1f} s (not counted)", ""]
    head = "| estimator | ours point s | ours normal CI s | ours total s |"
    sep = "|---|---:|---:|---:|"
    if have_obp:
        head += (" obp point s | ours/obp (medians) | ours/obp (minima) | ours value | obp value | abs diff |")
        sep += "---:|---:|---:|---:|---:|---:|"
    out += [head, sep]
    tot_ours = tot_obp = 0.0
    for r in rows:
        t = r["ours_point_s"] + r["ours_normal_s"]
        tot_ours += t
        line = f"| {r['estimator']} | {r['ours_point_s']:.2f} | {r['ours_normal_s']:.3f} | {t:.2f} |"
        if have_obp:
            tot_obp += r["obp_point_s"]
            ratio_min = min(r["ours_point_all_s"]) / min(r["obp_point_all_s"])
            line += (f" {r['obp_point_s']:.2f} | {r['ratio_point']:.2f} | {ratio_min:.2f} | "
                     f"{r['ours_value']:.10f} | {r['obp_value']:.10f} | {r['abs_diff']:.1e} |")
        out.append(line)
    total = f"| **total** | | | **{tot_ours:.1f}** |"
    if have_obp:
        total += f" **{tot_obp:.1f}** | **{tot_ours / tot_obp:.2f}** (incl. our CI) | | | | |"
    out += [total, "", f"Target: all seven point estimates + normal intervals under {TOTAL_TARGET_S:.0f} s: "
            f"{'met' if tot_ours < TOTAL_TARGET_S else 'NOT met'} ({tot_ours:.1f} s)."]
    if res["bootstrap"]:
        b0 = res["bootstrap"][0]
        out += ["", f"Bootstrap (percentile, {b0['resamples']} resamples) on the first {b0['n']:,} rounds:", "",
                "| estimator | ours s | obp s | ours/obp | ours CI | obp CI |", "|---|---:|---:|---:|---|---|"]
        for b in res["bootstrap"]:
            o = b.get("obp")
            out.append(f"| {b['estimator']} | {b['ours_s']:.2f} | {b.get('obp_s', float('nan')):.2f} | "
                       f"{b.get('ratio', float('nan')):.2f} | [{b['ours'][0]:.5f}, {b['ours'][1]:.5f}] | "
                       + (f"[{o[0]:.5f}, {o[1]:.5f}] |" if o else "- |"))
    probe = m.get("full_bootstrap_probe")
    if probe:
        line = (f"Full-n bootstrap ({probe['estimator']}, n = {probe['n']:,}): {probe['resamples']} resamples took "
                f"{probe['seconds']:.1f} s -> ~{probe['extrapolated_s_per_1000']:.0f} s per 1000 resamples per "
                "estimator (ours)")
        if "obp_seconds" in probe:
            line += f"; obp {probe['obp_seconds']:.1f} s -> ~{probe['obp_extrapolated_s_per_1000']:.0f} s per 1000"
        out += ["", line + "."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000_000, help="logged rounds (default 10M)")
    p.add_argument("--actions", type=int, default=10, help="actions per round (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic log and the bootstrap")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds; medians are reported")
    p.add_argument("--level", type=float, default=0.95, help="interval level")
    p.add_argument("--estimators", default=",".join(NAMES), help="comma-separated subset of " + ",".join(NAMES))
    p.add_argument("--boot-n", type=int, default=100_000, help="bootstrap subsample size (0: no bootstrap)")
    p.add_argument("--boot-resamples", type=int, default=1000, help="bootstrap resamples on the subsample")
    p.add_argument("--full-boot-probe", type=int, default=5,
                   help="resamples of one full-n bootstrap, to extrapolate its cost (0: skip)")
    p.add_argument("--no-obp", action="store_true", help="time ours only")
    p.add_argument("--json-out", type=Path, default=Path(__file__).parent / "results" / "estimators.json")
    p.add_argument("--render", type=Path, help="only print the tables of an earlier run's JSON file")
    args = p.parse_args(argv)
    if args.render:
        print(markdown(json.loads(args.render.read_text())))
        return 0
    args.estimators = [s.strip() for s in args.estimators.split(",") if s.strip()]
    res = run(args)
    return publish(res, args.json_out, markdown)


if __name__ == "__main__":
    sys.exit(main())
