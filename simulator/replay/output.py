"""``placement replay``'s results on stdout, in the format asked for: a
terminal table (``table``, fitted to the width: no number or policy name is
ever cut), ``json`` (the results file), ``csv`` (one row per estimate) or
``markdown`` (summary, estimates and warnings, for a PR or a notebook).
Everything reads the JSON-ready results dict of
:func:`simulator.replay.pipeline.run_replay`."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Iterator, Sequence

from rich.console import Console
from rich.table import Table

from simulator.tables import Column, fitted

FORMATS = ("table", "json", "csv", "markdown")


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def interval_text(entry: dict[str, Any], method: str) -> str:
    ci = entry.get("intervals", {}).get(method)
    if ci is None:
        return ""
    if "lower" not in ci:
        return "n/a"
    mark = "*" if ci.get("nominal") is False else ""  # DM: sampling only, see the footnote
    return f"[{fmt(ci['lower'])}, {fmt(ci['upper'])}]{mark}"


def estimate_rows(results: dict[str, Any], scopes: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for policy in results["policies"]:
        for entry in policy["estimates"]:
            if entry["scope"] in scopes:
                yield policy["name"], entry


def scopes_of(results: dict[str, Any], slots: bool) -> tuple[str, ...]:
    labels = results["log"]["slots"]
    return ("page",) + tuple(f"slot:{s}" for s in labels if slots and len(labels) > 1)


# --------------------------------------------------------------------------- table


def estimate_cells(results: dict[str, Any], scopes: Sequence[str]) -> tuple[list[Column], list[list[str]]]:
    methods = results["config"]["intervals"]
    columns = [Column("policy", key=True, abbreviation="P"), Column("estimator", key=True),
               Column("scope", key=True), Column("estimate", "right"),
               *[Column(m, "right") for m in methods], Column("ESS", "right")]
    rows = []
    for name, entry in estimate_rows(results, scopes):
        if "refused" in entry:
            rows.append([name, entry["estimator"], entry["scope"], f"refused: {entry['refused']}",
                         *[""] * len(methods), ""])
        else:
            rows.append([name, entry["estimator"], entry["scope"], fmt(entry["value"]),
                         *[interval_text(entry, m) for m in methods], fmt(entry.get("ess"), 5)])
    return columns, rows


def diagnostic_cells(results: dict[str, Any]) -> tuple[list[Column], list[list[str]]]:
    columns = [Column("policy", key=True, abbreviation="P"), Column("slot", key=True), Column("n", "right"),
               Column("ESS", "right"), Column("max w", "right"), Column("mean w", "right"),
               Column("support deficiency", "right")]
    rows = []
    for policy in results["policies"]:
        diag = policy["diagnostics"]
        for label, d in [(f"slot {k}", d) for k, d in diag["slots"].items()] + [("page (joint)", diag["page_joint"])]:
            if "refused" in d:
                rows.append([policy["name"], label, "", f"refused: {d['refused']}", "", "", ""])
            else:
                rows.append([policy["name"], label, fmt(d.get("n")), fmt(d.get("effective_sample_size"), 5),
                             fmt(d.get("max_weight")), fmt(d.get("mean_weight")),
                             fmt(d.get("support_deficiency")) if "support_deficiency" in d else ""])
    return columns, rows


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
            table.add_row(str(i), name, fmt(entry["value"]), fmt(entry["lower"]), fmt(entry["upper"]))
    return table


def importance_table(imp: dict[str, Any]) -> Table:
    table = Table(title=f"Feature-group importance of {imp['policy']} ({imp['method']}; {imp['estimator']})")
    for col in ("group", "value without", "drop", f"{imp['level']:.0%} interval", "matters"):
        table.add_column(col)
    for e in imp["groups"]:
        if "refused" in e:
            table.add_row(e["group"], f"refused: {e['refused']}", "", "", "")
        else:
            table.add_row(e["group"], fmt(e["value_without"]), fmt(e["drop"]),
                          f"[{fmt(e['lower'])}, {fmt(e['upper'])}]", "yes" if e["significant"] else "no")
    return table


def _say(console: Console, text: str, style: str = "") -> None:
    """Plain text (no markup: policy names and intervals hold brackets), wrapped at spaces."""
    console.print(text, style=style or None, markup=False, emoji=False, highlight=False)


def print_results(results: dict[str, Any], console: Console | None = None, slots: bool = False) -> None:
    """Summary, estimates, diagnostics and warnings, fitted to the console's width."""
    console = console or Console()
    log = results["log"]
    _say(console, f"{log['events']} events, slots {', '.join(log['slots'])}, "
                  f"mean page reward {log['mean_page_reward']:.4g}")
    if log.get("torn_lines_skipped"):
        shown = ", ".join(log["torn_lines"][:5])
        _say(console, f"{log['torn_lines_skipped']} torn line(s) skipped (a crash mid-write): {shown}"
                      f"{' ...' if log['torn_lines_skipped'] > 5 else ''}", "yellow")
    summary = results.get("summary") or {}
    for sentence in summary.get("sentences", []):
        _say(console, sentence, "bold")
    if summary.get("next"):
        _say(console, f"Next: {summary['next']}", "bold")
    level = results["config"]["level"]
    scopes = scopes_of(results, slots)
    for part in fitted(f"Policy value ({', '.join(scopes)}), {level:.0%} intervals", *estimate_cells(results, scopes),
                       console.width):
        console.print(part, soft_wrap=True)
    for part in fitted("Weight diagnostics (w = pi/mu per slot; joint = product over slots)",
                       *diagnostic_cells(results), console.width):
        console.print(part, soft_wrap=True)
    if any(ci.get("nominal") is False for _, e in estimate_rows(results, scopes)
           for ci in e.get("intervals", {}).values()):
        _say(console, "* DM: the interval is the contexts' sampling variance only; the reward model's "
                      "fitting error and bias are not in it, so it is not a confidence interval", "dim")
    notes: dict[str, list[str]] = {}
    for policy in results["policies"]:
        for note in policy.get("notes", []):
            notes.setdefault(note, []).append(policy["name"])
    for note, names in notes.items():
        who = "every policy" if len(names) == len(results["policies"]) > 1 else ", ".join(names)
        _say(console, f"{who}: {note}", "dim")
    for policy in results["policies"]:
        for w in policy.get("warnings", []):
            _say(console, f"warning: {policy['name']} ({w['scope']}): {w['message']}", "yellow")
    quality = results.get("reward_model")
    if quality:
        _say(console, f"reward model (DM, DR family): held-out MSE {quality['heldout_mse']:.4g} vs "
                      f"{quality['constant_mse']:.4g} for a constant", "dim")
    if "search" in results:
        console.print(search_table(results["search"]))
        rec = results["search"]["recommendation"]
        verdict = f"change to {rec['to']}" if rec["change"] else "keep the current setting"
        _say(console, f"Recommendation: {verdict} -- {rec['reason']}")
    if "importance" in results:
        console.print(importance_table(results["importance"]))


# --------------------------------------------------------------------------- csv, markdown, json


def records(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat record per (policy, estimator, scope): the csv rows."""
    methods = results["config"]["intervals"]
    out = []
    for policy in results["policies"]:
        for e in policy["estimates"]:
            rec: dict[str, Any] = {"policy": policy["name"], "estimator": e["estimator"], "scope": e["scope"],
                                   "value": e.get("value"), "se": e.get("se"), "n": e.get("n"),
                                   "ess": e.get("ess")}
            for m in methods:
                iv = (e.get("intervals") or {}).get(m) or {}
                rec[f"{m}_lower"], rec[f"{m}_upper"] = iv.get("lower"), iv.get("upper")
            rec["refused"] = e.get("refused", "")
            rec["flags"] = "; ".join(e.get("flags", []))
            out.append(rec)
    return out


def to_csv(results: dict[str, Any]) -> str:
    rows = records(results)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else repr(v) if isinstance(v, float) else v)
                          for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _clean(obj: Any) -> Any:
    """NaN/inf become null: the file stays strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def json_text(results: dict[str, Any]) -> str:
    """The results as strict JSON (the ``--json-out`` file and ``--format json``)."""
    return json.dumps(_clean(results), indent=2, allow_nan=False)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(results: dict[str, Any], slots: bool = False) -> str:
    summary = results.get("summary") or {}
    lines = ["# Offline evaluation", ""]
    lines += [" ".join(summary.get("sentences", []))] + ([f"**Next:** {summary['next']}"] if summary.get("next")
                                                         else []) + [""]
    columns, rows = estimate_cells(results, scopes_of(results, slots))
    lines.append("| " + " | ".join(c.header for c in columns) + " |")
    lines.append("|" + "|".join("---:" if c.justify == "right" else "---" for c in columns) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    warnings = [(p["name"], w) for p in results["policies"] for w in p.get("warnings", [])]
    if warnings:
        lines += ["", "## Warnings", ""]
        lines += [f"- **{_md_cell(name)}** ({w['scope']}, {w['kind']}): {w['message']}" for name, w in warnings]
    return "\n".join(lines) + "\n"


def render(results: dict[str, Any], form: str, slots: bool = False) -> str:
    """The results as text in ``form`` (json, csv, markdown); ``table`` is :func:`print_results`."""
    if form == "json":
        return json_text(results) + "\n"
    if form == "csv":
        return to_csv(results)
    if form == "markdown":
        return to_markdown(results, slots)
    raise ValueError(f"unknown format '{form}'; known: {', '.join(FORMATS)}")
