"""The report's plots, drawn for a merchandiser as much as a scientist: every
estimate with its interval against the logging policy's value (a reference
line), axes within the reward's own range (a click rate never gets a negative
axis), short policy labels with a legend, and one weight panel per policy so
the ``logged`` spike at w = 1 flattens no one else's distribution."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from simulator.replay.summary import interval

SHORT = 18  # policy names longer than this are shown as P1, P2, ... with a legend
ESTIMATOR_ORDER = ("dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os", "iips", "pi", "sips")


def short_labels(results: dict[str, Any]) -> dict[str, str]:
    """Policy name -> its label in the plots (the name itself when short)."""
    out: dict[str, str] = {}
    n = 0
    for policy in results["policies"]:
        name = policy["name"]
        if len(name) <= SHORT:
            out[name] = name
        else:
            n += 1
            out[name] = f"P{n}"
    return out


def value_limits(results: dict[str, Any], scope: str, lows: list[float], highs: list[float]) -> tuple[float, float]:
    """x limits around the data, never beyond the reward's range (K times it for the page)."""
    lo_r, hi_r = results["log"].get("reward_range", [-math.inf, math.inf])
    k = len(results["log"]["slots"]) if scope == "page" else 1
    floor, ceiling = k * min(lo_r, 0.0) if lo_r < 0 else 0.0, k * hi_r if hi_r > 0 else math.inf
    if results["config"].get("reward_max") is not None:
        ceiling = k * max(float(results["config"]["reward_max"]), hi_r)
    lo, hi = min(lows), max(highs)
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1e-6) * 0.1
    return max(floor, lo - pad), min(ceiling, hi + pad)


def plot_estimates(results: dict[str, Any], path: Path, labels: dict[str, str]) -> bool:
    """One panel per scope (page, then each slot): rows are policies, one marker
    per estimator with its interval, the logging policy's value as a dashed line."""
    import matplotlib.pyplot as plt

    scopes = ["page"] + ([f"slot:{s}" for s in results["log"]["slots"]] if len(results["log"]["slots"]) > 1 else [])
    scopes = scopes[:5]
    policies = results["policies"]
    estimators = [e for e in ESTIMATOR_ORDER if any(x["estimator"] == e for p in policies for x in p["estimates"])]
    fig, axes = plt.subplots(1, len(scopes), figsize=(min(4.2 * len(scopes) + 1.5, 16), max(3.8, 0.6 * len(policies) + 2.4)),
                             sharey=True, squeeze=False)
    drawn = False
    lead_estimator = (results.get("summary") or {}).get("estimator")
    for ax, scope in zip(axes[0], scopes):
        lows, highs = [], []
        for y, policy in enumerate(policies):
            entries = {e["estimator"]: e for e in policy["estimates"] if e["scope"] == scope and "value" in e}
            for j, name in enumerate(estimators):
                e = entries.get(name)
                if e is None:
                    continue
                off = (j - (len(estimators) - 1) / 2) * (0.7 / max(len(estimators), 1))
                ci = interval(e)
                lo, hi = ci if ci else (e["value"], e["value"])
                # A point estimate can lie outside its interval once that is clipped
                # to the reward range: the bar then ends at the point.
                lead = name == lead_estimator  # the summary's estimator stands out, the others are context
                ax.errorbar(e["value"], y + off, xerr=[[max(0.0, e["value"] - lo)], [max(0.0, hi - e["value"])]], fmt="o",
                            ms=7 if lead else 4, capsize=3 if lead else 2, lw=2.2 if lead else 1,
                            alpha=1.0 if lead else 0.45, color=f"C{j % 10}", zorder=3 if lead else 2,
                            label=name.upper() + (" (summary)" if lead else ""))
                lows.append(lo)
                highs.append(hi)
                drawn = True
        reference = _reference(results, scope)
        if reference is not None:
            ax.axvline(reference, color="black", ls="--", lw=1)
            lows.append(reference)
            highs.append(reference)
        if lows:
            ax.set_xlim(*value_limits(results, scope, lows, highs))
        ax.set_title("page value" if scope == "page" else f"slot {scope.partition(':')[2]}", fontsize=11)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=9)
    axes[0][0].set_yticks(range(len(policies)), [labels[p["name"]] for p in policies], fontsize=10)
    axes[0][0].invert_yaxis()
    handles, names = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(names, handles))
    from matplotlib.lines import Line2D
    unique["logging policy (log mean)"] = Line2D([], [], color="black", ls="--", lw=1)
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=min(len(unique), 6), fontsize=9,
               frameon=False)
    level = results["config"]["level"]
    fig.suptitle(f"Estimated value per policy, {level:.0%} intervals (normal)", fontsize=12)
    fig.tight_layout(rect=(0, 0.12 if len(unique) > 6 else 0.07, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def _reference(results: dict[str, Any], scope: str) -> float | None:
    """The logging policy's value in a scope: its on-policy estimate (the log's own mean)."""
    if scope == "page":
        return float(results["log"]["mean_page_reward"])
    for policy in results["policies"]:
        if policy["kind"] == "logged":
            for e in policy["estimates"]:
                if e["scope"] == scope and e["estimator"] in ("ips", "snips") and "value" in e:
                    return float(e["value"])
    return None


def plot_weights(results: dict[str, Any], path: Path, labels: dict[str, str]) -> bool:
    """One small panel per policy (its own count scale): the log10 weight histogram,
    with its ESS and largest weight in the title."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    policies = [p for p in results["policies"] if "counts" in (p.get("weights") or {})][:12]
    if not policies:
        return False
    cols = min(len(policies), 3)
    rows = math.ceil(len(policies) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows + 0.6), squeeze=False)
    edges_all = [x for p in policies for x in p["weights"]["log10_edges"]]
    lo, hi = min(edges_all), max(edges_all)
    for i, ax in enumerate(axes.flat):
        if i >= len(policies):
            ax.axis("off")
            continue
        policy = policies[i]
        hist = policy["weights"]
        ax.stairs(hist["counts"], [10 ** x for x in hist["log10_edges"]], fill=True, color=f"C{i % 10}",
                  alpha=0.7)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 0.1, 0.2, 0.5, 1, 2, 5, ...
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range would print overlapping minor labels
        ax.set_xlim(10 ** (lo - 0.1), 10 ** (hi + 0.1))
        ax.axvline(1.0, color="black", ls=":", lw=1)
        ess = policy["diagnostics"]["page_joint"].get("effective_sample_size")
        top = (hist.get("quantiles") or {}).get("max")
        ax.set_title(f"{labels[policy['name']]}: ESS {fmt_num(ess)}, max w {fmt_num(top)}"
                     + (f"\n{hist['zeros']} decisions at w = 0 (not shown)" if hist.get("zeros") else ""),
                     fontsize=10)
        ax.tick_params(labelsize=8)
        if i % cols == 0:
            ax.set_ylabel("decisions", fontsize=9)
    fig.supxlabel("importance weight w = target / logging probability (log scale; 1 = as logged)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def fmt_num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
