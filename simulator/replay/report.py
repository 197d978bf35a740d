"""Outputs of ``placement replay`` besides the terminal (that is
:mod:`simulator.replay.output`): the JSON results file, the HTML report with
PNG plots, and rich progress bars.

Everything reads the JSON-ready results dict of :func:`simulator.replay.run_replay`
(so a report can be rebuilt from a saved JSON file). Refusals are shown as
"refused: reason", never as numbers.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from simulator.replay.output import estimate_rows, fmt, interval_text, json_text
from simulator.replay.plots import plot_estimates, plot_weights, short_labels
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


def _plot_bars(names: Sequence[str], values: Sequence[float], lower: Sequence[float], upper: Sequence[float],
               xlabel: str, path: Path, reference: float | None = None) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.3 * len(names) + 1)))
    err = [[max(0.0, v - lo) for v, lo in zip(values, lower)],  # clipped intervals may not hold the point
           [max(0.0, hi - v) for v, hi in zip(values, upper)]]
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


CSS = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;line-height:1.45}"
       "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
       "th{background:#eee}.summary{background:#f4f8ff;border-left:5px solid #3b73c4;padding:.8em 1.2em;"
       "font-size:16px}.warn{background:#fff7e6;border-left:5px solid #e0a000;padding:.6em 1.2em}"
       ".next{font-weight:600}img{max-width:100%}td.num{text-align:right;font-variant-numeric:tabular-nums}")


def _summary_html(results: dict[str, Any], labels: dict[str, str]) -> str:
    """The opening box: the plain-language summary, what to do next, the warnings."""
    summary = results.get("summary") or {}
    parts = ["<div class='summary'><h2>Summary</h2>"]
    parts += [f"<p>{html.escape(s)}</p>" for s in summary.get("sentences", [])]
    if summary.get("next"):
        parts.append(f"<p class='next'>What to do next: {html.escape(summary['next'])}</p>")
    parts.append("</div>")
    warnings = [(p["name"], w) for p in results["policies"] for w in p.get("warnings", [])]
    if warnings:
        parts.append(f"<div class='warn'><h3>Warnings ({len(warnings)})</h3><ul>")
        parts += [f"<li><b>{html.escape(labels.get(name, name))}</b> ({html.escape(w['scope'])}): "
                  f"{html.escape(w['message'])}</li>" for name, w in warnings]
        parts.append("</ul></div>")
    return "\n".join(parts)


def _legend_html(labels: dict[str, str]) -> str:
    rows = [[short, name] for name, short in labels.items() if short != name]
    return ("<p>Policy labels in the plots:</p>" + _html_table(["label", "policy"], rows)) if rows else ""


def report(results: dict[str, Any], directory: Path) -> Path:
    """Write ``index.html`` with PNG plots into ``directory``; returns the page.
    It opens with the summary and warnings, then the plots, then every number."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    labels = short_labels(results)
    has_estimates = plot_estimates(results, out / "estimates.png", labels)
    has_weights = plot_weights(results, out / "weights.png", labels)
    methods = results["config"]["intervals"]
    rows = []
    for name, e in estimate_rows(results, ("page",) + tuple(f"slot:{s}" for s in results["log"]["slots"])):
        if "refused" in e:
            rows.append([name, e["estimator"], e["scope"], f"refused: {e['refused']} ({e.get('detail', '')})",
                         *[""] * len(methods), ""])
        else:
            rows.append([name, e["estimator"], e["scope"], fmt(e["value"]),
                         *[interval_text(e, m).replace(", ", ",\u00a0") for m in methods],  # one line each
                         fmt(e.get("ess"), 5)])
    log = results["log"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>placement replay</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Offline evaluation</h1>",
        _summary_html(results, labels),
        f"<p>{log['events']} logged decisions from {html.escape(', '.join(log['files']) or 'memory')}; "
        f"slots {html.escape(', '.join(log['slots']))}; the logging policy's page value (the log's own mean) "
        f"{log['mean_page_reward']:.4g}.</p>",
        "<h2>Estimates</h2>",
        "<p>Each dot is one estimator's estimate, its bar the interval; the dashed line is what the logging "
        "policy earned. A policy whose bars lie right of the line is likely better than what runs today.</p>",
        "<img src='estimates.png' alt='estimates with intervals against the logging policy'>" if has_estimates
        else "<p>No estimate to plot (all refused).</p>",
        _legend_html(labels),
        "<h2>Importance weights</h2>",
        "<p>How far each policy is from the logging policy: weights near 1 mean it chooses as the logger did; "
        "a long right tail means a few decisions carry the estimate (see ESS).</p>",
        "<img src='weights.png' alt='importance-weight distribution per policy'>" if has_weights else "",
        "<h2>All estimates</h2>",
        _html_table(["policy", "estimator", "scope", "estimate", *methods, "ESS"], rows),
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
