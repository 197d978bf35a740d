"""Outputs of ``placement replay`` besides the terminal (that is
:mod:`simulator.replay.output`): the JSON results file, the HTML report with
PNG plots, and rich progress bars.

Everything reads the JSON-ready results dict of :func:`simulator.replay.run_replay`
(so a report can be rebuilt from a saved JSON file). Refusals are shown as
"refused: reason", never as numbers.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from simulator.replay.output import estimate_rows, fmt, interval_text, json_text
from simulator.replay.progress import Progress as Advance
from simulator.replay.progress import ProgressSink


# --------------------------------------------------------------------------- progress


class RichProgress(ProgressSink):
    """Progress bars on ``console`` (stderr by default)."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)

    def task(self, description: str, total: int) -> "_RichTask":
        return _RichTask(self.console, description, total)


class _RichTask:
    def __init__(self, console: Console, description: str, total: int):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self.description, self.total = description, total

    def __enter__(self) -> Advance:
        self.progress.start()
        task = self.progress.add_task(self.description, total=self.total)
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()


# --------------------------------------------------------------------------- JSON


def write_json(results: dict[str, Any], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_text(results), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- HTML + PNG


def _plot_estimates(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = [(name, e) for name, e in estimate_rows(results, ("page",))]
    method = results["config"]["intervals"][0] if results["config"]["intervals"] else "normal"
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(rows) + 1)))
    labels = []
    for y, (name, e) in enumerate(rows):
        labels.append(f"{name[:40]} | {e['estimator']}")
        if "value" not in e:
            ax.text(0.0, y, f"refused: {e['refused']}", va="center", fontsize=7, color="red",
                    transform=ax.get_yaxis_transform())
            continue
        ci = e.get("intervals", {}).get(method, {})
        if "lower" in ci:
            ax.errorbar(e["value"], y, xerr=[[e["value"] - ci["lower"]], [ci["upper"] - e["value"]]],
                        fmt="o", ms=3, capsize=2, color="C0")
        else:
            ax.plot(e["value"], y, "o", ms=3, color="C1")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"estimated page value ({method} interval, level {results['config']['level']})")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_weights(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, policy in enumerate(results["policies"]):
        hist = policy.get("weights") or {}
        if "counts" not in hist:
            continue
        edges, counts = hist["log10_edges"], hist["counts"]
        ax.stairs(counts, edges, label=f"{policy['name'][:40]} (zeros {hist['zeros']})", color=f"C{i % 10}")
    ax.set_xlabel("log10 importance weight pi/mu (per slot)")
    ax.set_ylabel("slot decisions")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_bars(names: Sequence[str], values: Sequence[float], lower: Sequence[float], upper: Sequence[float],
               xlabel: str, path: Path, reference: float | None = None) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.3 * len(names) + 1)))
    err = [[v - lo for v, lo in zip(values, lower)], [hi - v for v, hi in zip(values, upper)]]
    ax.errorbar(values, range(len(names)), xerr=err, fmt="o", ms=4, capsize=3)
    if reference is not None:
        ax.axvline(reference, color="grey", ls="--", lw=1)
    ax.set_yticks(range(len(names)), [n[:60] for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report(results: dict[str, Any], directory: Path) -> Path:
    """Write ``index.html`` with PNG plots into ``directory``; returns the page."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _plot_estimates(results, out / "estimates.png")
    _plot_weights(results, out / "weights.png")
    methods = results["config"]["intervals"]
    rows = []
    for name, e in estimate_rows(results, ("page",) + tuple(f"slot:{s}" for s in results["log"]["slots"])):
        if "refused" in e:
            rows.append([name, e["estimator"], e["scope"], f"refused: {e['refused']} ({e.get('detail', '')})",
                         *[""] * len(methods), ""])
        else:
            rows.append([name, e["estimator"], e["scope"], fmt(e["value"]),
                         *[interval_text(e, m) for m in methods], fmt(e.get("ess"), 5)])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>placement replay</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}</style></head><body>",
        "<h1>Offline evaluation</h1>",
        f"<p>{results['log']['events']} events from {html.escape(', '.join(results['log']['files']) or 'memory')}; "
        f"slots {html.escape(', '.join(results['log']['slots']))}; mean page reward "
        f"{results['log']['mean_page_reward']:.4g}; level {results['config']['level']}.</p>",
        "<h2>Estimates</h2><img src='estimates.png' alt='estimates with intervals'>",
        _html_table(["policy", "estimator", "scope", "estimate", *methods, "ESS"], rows),
        "<h2>Importance weights</h2><img src='weights.png' alt='importance-weight distribution'>",
    ]
    diag_rows = []
    for policy in results["policies"]:
        for label, d in [*policy["diagnostics"]["slots"].items(), ("page (joint)", policy["diagnostics"]["page_joint"])]:
            if "refused" in d:
                diag_rows.append([policy["name"], label, f"refused: {d['refused']} ({d.get('detail', '')})", "", "", ""])
            else:
                diag_rows.append([policy["name"], label, fmt(d.get("effective_sample_size"), 5),
                                  fmt(d.get("max_weight")), fmt(d.get("mean_weight")),
                                  fmt(d.get("support_deficiency"))])
    parts.append(_html_table(["policy", "slot", "ESS", "max w", "mean w", "support deficiency"], diag_rows))
    notes = [f"{p['name']}: {n}" for p in results["policies"] for n in p.get("notes", [])]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if "search" in results:
        parts.append(_search_html(results["search"], out))
    if "importance" in results:
        parts.append(_importance_html(results["importance"], out))
    parts.append("</body></html>")
    page = out / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page


def _search_html(search: dict[str, Any], out: Path) -> str:
    ok = [e for e in search["ranked"] if "value" in e][:25]
    if ok:
        _plot_bars([e["name"] for e in ok], [e["value"] for e in ok], [e["lower"] for e in ok],
                   [e["upper"] for e in ok], f"page value ({search['estimator']})", out / "search.png",
                   search["current"].get("value"))
    rec = search["recommendation"]
    rows = [[i, e["name"], fmt(e.get("value")), fmt(e.get("lower")), fmt(e.get("upper")), e.get("refused", "")]
            for i, e in enumerate(search["ranked"], start=1)]
    return ("<h2>Search</h2>" + ("<img src='search.png' alt='search'>" if ok else "")
            + f"<p><b>{'Change to ' + html.escape(rec['to']) if rec['change'] else 'Keep the current setting'}"
            f"</b>: {html.escape(rec['reason'])}</p>"
            + _html_table(["rank", "setting", "estimate", "lower", "upper", "refused"], rows))


def _importance_html(imp: dict[str, Any], out: Path) -> str:
    ok = [e for e in imp["groups"] if "drop" in e]
    if ok:
        _plot_bars([e["group"] for e in ok], [e["drop"] for e in ok], [e["lower"] for e in ok],
                   [e["upper"] for e in ok], "value lost without the group", out / "importance.png", 0.0)
    rows = [[e["group"], fmt(e.get("value_without")), fmt(e.get("drop")), fmt(e.get("lower")),
             fmt(e.get("upper")), e.get("refused", "")] for e in imp["groups"]]
    return (f"<h2>Feature-group importance</h2><p>{html.escape(imp['method'])}, policy "
            f"{html.escape(imp['policy'])}, estimator {imp['estimator']}</p>"
            + ("<img src='importance.png' alt='importance'>" if ok else "")
            + _html_table(["group", "value without", "drop", "lower", "upper", "refused"], rows))
