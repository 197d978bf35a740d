"""Results of simulation grids: a terminal table and an HTML page with plots.

The table answers "which policy earns most, and how far from the oracle";
the plots show how that unfolds over the run (reward and regret curves with
a band across seeds) and what each policy actually placed in each slot over
simulated time, which is where a seasonal shift becomes visible.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402

from simulator.experiments import GridResult  # noqa: E402
from simulator.tables import Column, fitted  # noqa: E402


def aggregate(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (scenario, policy), with the reward's spread."""
    ctr_cols = [c for c in summary.columns if c.startswith("ctr_")]
    grouped = summary.groupby(["scenario", "policy"], sort=True)
    out = grouped.agg(seeds=("seed", "nunique"), decisions=("decisions", "first"),
                      reward=("reward", "mean"), reward_sd=("reward", "std"),
                      expected_reward=("expected_reward", "mean"), oracle_reward=("oracle_reward", "mean"),
                      regret=("regret", "mean"), **{c: (c, "mean") for c in ctr_cols})
    out["reward_sd"] = out["reward_sd"].fillna(0.0)
    out["regret_pct"] = 100.0 * out["regret"] / out["oracle_reward"]
    return out.reset_index().sort_values(["scenario", "expected_reward"], ascending=[True, False])


def results_cells(summary: pd.DataFrame) -> tuple[list[Column], list[list[str]]]:
    """The results table's columns and cells (mean over seeds)."""
    agg = aggregate(summary)
    ctr_cols = [c for c in agg.columns if c.startswith("ctr_")]
    columns = [Column("scenario", key=True, abbreviation="S"), Column("policy", key=True, abbreviation="P"),
               Column("seeds", "right"), Column("reward", "right"), Column("expected", "right"),
               Column("regret vs oracle", "right"), *[Column(f"CTR {c[4:]}", "right") for c in ctr_cols]]
    rows = [[str(row["scenario"]), str(row["policy"]), str(row["seeds"]),
             f"{row['reward']:.1f} ± {row['reward_sd']:.1f}", f"{row['expected_reward']:.1f}",
             f"{row['regret']:.1f} ({row['regret_pct']:.0f}%)",
             *[f"{row[c]:.3f}" if pd.notna(row[c]) else "-" for c in ctr_cols]] for _, row in agg.iterrows()]
    return columns, rows


def print_results(summary: pd.DataFrame, console: Console | None = None) -> None:
    """Print the results table (cumulative reward, regret vs oracle, per-slot CTR),
    split or abbreviated to the console's width, never cut."""
    console = console or Console()
    for part in fitted("Simulation results (mean over seeds)", *results_cells(summary), console.width):
        console.print(part, soft_wrap=True)


def curves(records: pd.DataFrame) -> pd.DataFrame:
    """Cumulative reward and regret per run and decision."""
    per = (records.groupby(["scenario", "policy", "seed", "decision"], observed=True, sort=True)
           [["reward", "expected", "oracle_expected"]].sum().reset_index())
    per["regret"] = per["oracle_expected"] - per["expected"]
    keys = ["scenario", "policy", "seed"]
    per["cum_reward"] = per.groupby(keys, observed=True)["reward"].cumsum()
    per["cum_regret"] = per.groupby(keys, observed=True)["regret"].cumsum()
    return per


def _plot_curves(per: pd.DataFrame, column: str, ylabel: str, path: Path) -> Path:
    scenarios = sorted(per["scenario"].unique())
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 4.2), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        sub = per[per["scenario"] == scenario]
        for policy in sorted(sub["policy"].unique()):
            wide = sub[sub["policy"] == policy].pivot(index="decision", columns="seed", values=column)
            mean = wide.mean(axis=1)
            line, = ax.plot(wide.index, mean, label=policy)
            if wide.shape[1] > 1:
                ax.fill_between(wide.index, wide.min(axis=1), wide.max(axis=1), color=line.get_color(), alpha=0.2)
        ax.set_title(scenario)
        ax.set_xlabel("decision")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_shares(records: pd.DataFrame, scenario: str, policy: str, path: Path, bins: int = 40) -> Path:
    """Each collection's share of each slot over simulated days (seeds pooled)."""
    sub = records[(records["scenario"] == scenario) & (records["policy"] == policy)]
    slots = [s for s in ("homepage", "detail", "email") if s in set(sub["slot"])] + \
        sorted(set(sub["slot"]) - {"homepage", "detail", "email"})
    collections = sorted(set(sub["collection"]))
    colours = {c: plt.get_cmap("tab20")(i % 20) for i, c in enumerate(collections)}
    edges = np.linspace(0, float(sub["day"].max()) + 1e-9, bins + 1)
    fig, axes = plt.subplots(len(slots), 1, figsize=(10, 2.8 * len(slots)), squeeze=False, sharex=True)
    for ax, slot in zip(axes[:, 0], slots):
        rows = sub[sub["slot"] == slot]
        day_bin = pd.cut(rows["day"], edges, labels=False, include_lowest=True)
        counts = pd.crosstab(day_bin, rows["collection"].astype(str)).reindex(
            index=range(bins), columns=collections, fill_value=0)
        share = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
        mids = (edges[:-1] + edges[1:]) / 2
        ax.stackplot(mids, share.T.values, labels=collections, colors=[colours[c] for c in collections])
        ax.set_ylabel(f"{slot} share")
        ax.set_ylim(0, 1)
        ax.set_xlim(edges[0], edges[-1])
    axes[0, 0].set_title(f"{policy} on {scenario}: collection share of each slot")
    axes[-1, 0].set_xlabel("simulated day")
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def write_report(directory: Path | str, result: GridResult, title: str = "Placement simulation",
                 share_policies: Sequence[str] | None = None) -> Path:
    """Write index.html, PNG plots and the results table (CSV) into a directory.

    ``share_policies`` limits the slot-share plots (default: every policy)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    summary, records = result.summary, result.records
    per = curves(records)
    images = [("Cumulative reward (joined, as logged); band: min to max over seeds",
               _plot_curves(per, "cum_reward", "cumulative reward", out / "reward.png")),
              ("Cumulative regret vs the oracle (expected reward); band: min to max over seeds",
               _plot_curves(per, "cum_regret", "cumulative regret", out / "regret.png"))]
    policies = list(share_policies) if share_policies else sorted(summary["policy"].unique())
    for scenario in sorted(summary["scenario"].unique()):
        for policy in policies:
            if ((summary["scenario"] == scenario) & (summary["policy"] == policy)).any():
                path = out / f"share-{_slug(scenario)}-{_slug(policy)}.png"
                images.append((f"{policy} on {scenario}: what each slot showed over time",
                               _plot_shares(records, scenario, policy, path)))
    summary.to_csv(out / "results.csv", index=False)
    agg = aggregate(summary)
    body = [f"<h1>{html.escape(title)}</h1>",
            "<p>Reward is the joined reward the log records (late or lost rewards count as the default); "
            "regret is the oracle's expected reward minus the policy's, on the same contexts.</p>",
            agg.to_html(index=False, float_format=lambda v: f"{v:.3f}", classes="results"),
            "<p><a href='results.csv'>per-run results (CSV)</a></p>"]
    for caption, path in images:
        body.append(f"<figure><img src='{path.name}' alt='{html.escape(caption)}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    page = ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1400px}"
            "table.results{border-collapse:collapse;font-size:0.9em}"
            "table.results td,table.results th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "img{max-width:100%}figure{margin:1.5em 0}</style></head><body>"
            + "\n".join(body) + "</body></html>")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
