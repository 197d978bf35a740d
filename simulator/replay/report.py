"""Outputs of ``placement replay``: a terminal table, the JSON results file,
an HTML report with PNG plots, and rich progress bars.

Everything reads the JSON-ready results dict of :func:`simulator.replay.run_replay`
(so a report can be rebuilt from a saved JSON file). Refusals are shown as
"refused: reason", never as numbers.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

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


def _clean(obj: Any) -> Any:
    """NaN/inf become null: the file stays strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(results: dict[str, Any], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(results), indent=2, allow_nan=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- terminal


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _interval_text(entry: dict[str, Any], method: str) -> str:
    ci = entry.get("intervals", {}).get(method)
    if ci is None:
        return ""
    if "lower" not in ci:
        return "n/a"
    mark = "*" if ci.get("nominal") is False else ""  # DM: sampling only, see the footnote
    return f"[{_fmt(ci['lower'])}, {_fmt(ci['upper'])}]{mark}"


def _estimate_rows(results: dict[str, Any], scopes: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for policy in results["policies"]:
        for entry in policy["estimates"]:
            if entry["scope"] in scopes:
                yield policy["name"], entry


def estimates_table(results: dict[str, Any], scopes: Sequence[str] = ("page",)) -> Table:
    level = results["config"]["level"]
    methods = results["config"]["intervals"]
    table = Table(title=f"Policy value ({', '.join(scopes)}), {level:.0%} intervals", show_lines=False)
    table.add_column("policy", overflow="fold", ratio=3)
    for col in ("estimator", "scope"):
        table.add_column(col, no_wrap=True)
    for col in ("estimate", *methods, "ESS"):
        table.add_column(col, justify="right", no_wrap=True)
    last = None
    for name, entry in _estimate_rows(results, scopes):
        shown = name if name != last else ""
        last = name
        if "refused" in entry:
            table.add_row(shown, entry["estimator"], entry["scope"],
                          f"[red]refused: {entry['refused']}[/red]", *[""] * len(methods), "")
            continue
        table.add_row(shown, entry["estimator"], entry["scope"], _fmt(entry["value"]),
                      *[_interval_text(entry, m) for m in methods], _fmt(entry.get("ess"), 5))
    return table


def diagnostics_table(results: dict[str, Any]) -> Table:
    table = Table(title="Weight diagnostics (w = pi/mu per slot; joint = product over slots)")
    for col in ("policy", "slot", "n", "ESS", "max w", "mean w", "support deficiency"):
        table.add_column(col)
    for policy in results["policies"]:
        diag = policy["diagnostics"]
        rows = [(f"slot {k}", d) for k, d in diag["slots"].items()] + [("page (joint)", diag["page_joint"])]
        for i, (label, d) in enumerate(rows):
            name = policy["name"] if i == 0 else ""
            if "refused" in d:
                table.add_row(name, label, "", f"[red]refused: {d['refused']}[/red]", "", "", "")
                continue
            table.add_row(name, label, _fmt(d.get("n")), _fmt(d.get("effective_sample_size"), 5),
                          _fmt(d.get("max_weight")), _fmt(d.get("mean_weight")),
                          _fmt(d.get("support_deficiency")) if "support_deficiency" in d else "")
    return table


def search_table(search: dict[str, Any], top: int = 15) -> Table:
    table = Table(title=f"Search: page value by {search['estimator']}, ranked by the "
                        f"{search['level']:.0%} lower bound")
    table.add_column("rank")
    table.add_column("setting", overflow="fold")
    for col in ("estimate", "lower", "upper"):
        table.add_column(col, justify="right", no_wrap=True)
    current = search["current"]["name"]
    for i, entry in enumerate(search["ranked"][:top], start=1):
        name = entry["name"] + ("  (current)" if entry["name"] == current else "")
        if "refused" in entry:
            table.add_row(str(i), name, f"refused: {entry['refused']}", "", "")
        else:
            table.add_row(str(i), name, _fmt(entry["value"]), _fmt(entry["lower"]), _fmt(entry["upper"]))
    return table


def importance_table(imp: dict[str, Any]) -> Table:
    table = Table(title=f"Feature-group importance of {imp['policy']} ({imp['method']}; {imp['estimator']})")
    for col in ("group", "value without", "drop", f"{imp['level']:.0%} interval", "matters"):
        table.add_column(col)
    for e in imp["groups"]:
        if "refused" in e:
            table.add_row(e["group"], f"refused: {e['refused']}", "", "", "")
        else:
            table.add_row(e["group"], _fmt(e["value_without"]), _fmt(e["drop"]),
                          f"[{_fmt(e['lower'])}, {_fmt(e['upper'])}]", "yes" if e["significant"] else "no")
    return table


def print_results(results: dict[str, Any], console: Console | None = None, slots: bool = False) -> None:
    console = console or Console()
    log = results["log"]
    console.print(f"[bold]{log['events']}[/bold] events, slots {', '.join(log['slots'])}, "
                  f"mean page reward {log['mean_page_reward']:.4g}")
    if log.get("torn_lines_skipped"):
        shown = ", ".join(log["torn_lines"][:5])
        console.print(f"[yellow]{log['torn_lines_skipped']} torn line(s) skipped (a crash mid-write): {shown}"
                      f"{' ...' if log['torn_lines_skipped'] > 5 else ''}[/yellow]")
    console.print(estimates_table(results, ("page",) + tuple(
        f"slot:{s}" for s in log["slots"] if slots and len(log["slots"]) > 1)))
    console.print(diagnostics_table(results))
    if any(ci.get("nominal") is False for _, e in _estimate_rows(results, ("page",))
           for ci in e.get("intervals", {}).values()):
        console.print("[dim]* DM: the interval is the contexts' sampling variance only; the reward model's "
                      "fitting error and bias are not in it, so it is not a confidence interval[/dim]")
    for policy in results["policies"]:
        for note in policy.get("notes", []):
            console.print(f"[dim]{policy['name']}: {note}[/dim]")
        flagged = [e for e in policy["estimates"] if any(f.startswith("low_ess") for f in e.get("flags", []))]
        if flagged:
            names = ", ".join(dict.fromkeys(e["estimator"] for e in flagged))
            scopes = ", ".join(dict.fromkeys(e["scope"] for e in flagged))
            console.print(f"{policy['name']}: low effective sample size (ESS < {results['config']['min_ess']:g}) "
                          f"for {names} ({scopes})", style="yellow", markup=False, emoji=False)
    quality = results.get("reward_model")
    if quality:
        console.print(f"reward model (DM, DR family): held-out MSE {quality['heldout_mse']:.4g} vs "
                      f"{quality['constant_mse']:.4g} for a constant", style="dim", markup=False)
    if "search" in results:
        console.print(search_table(results["search"]))
        rec = results["search"]["recommendation"]
        verdict = f"[green]change to {rec['to']}[/green]" if rec["change"] else "[yellow]keep the current setting[/yellow]"
        console.print(f"Recommendation: {verdict} -- {rec['reason']}")
    if "importance" in results:
        console.print(importance_table(results["importance"]))


# --------------------------------------------------------------------------- HTML + PNG


def _plot_estimates(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = [(name, e) for name, e in _estimate_rows(results, ("page",))]
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
    for name, e in _estimate_rows(results, ("page",) + tuple(f"slot:{s}" for s in results["log"]["slots"])):
        if "refused" in e:
            rows.append([name, e["estimator"], e["scope"], f"refused: {e['refused']} ({e.get('detail', '')})",
                         *[""] * len(methods), ""])
        else:
            rows.append([name, e["estimator"], e["scope"], _fmt(e["value"]),
                         *[_interval_text(e, m) for m in methods], _fmt(e.get("ess"), 5)])
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
                diag_rows.append([policy["name"], label, _fmt(d.get("effective_sample_size"), 5),
                                  _fmt(d.get("max_weight")), _fmt(d.get("mean_weight")),
                                  _fmt(d.get("support_deficiency"))])
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
    rows = [[i, e["name"], _fmt(e.get("value")), _fmt(e.get("lower")), _fmt(e.get("upper")), e.get("refused", "")]
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
    rows = [[e["group"], _fmt(e.get("value_without")), _fmt(e.get("drop")), _fmt(e.get("lower")),
             _fmt(e.get("upper")), e.get("refused", "")] for e in imp["groups"]]
    return (f"<h2>Feature-group importance</h2><p>{html.escape(imp['method'])}, policy "
            f"{html.escape(imp['policy'])}, estimator {imp['estimator']}</p>"
            + ("<img src='importance.png' alt='importance'>" if ok else "")
            + _html_table(["group", "value without", "drop", "lower", "upper", "refused"], rows))
