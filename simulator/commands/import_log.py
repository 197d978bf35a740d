"""``placement import``: tabular logged bandit data (CSV or Parquet) into the
engine's joined DSJSON log. The work is :mod:`bandit.logformat.tabular`; this is the
command line around it (mapping flags, progress, summary, exit codes)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bandit.logformat.tabular import ImportSummary, MappingError, build_mapping, import_log as run_import

SHOWN_REJECTS = 10


def import_log(
    source: Path = typer.Argument(..., help="Logged decisions: CSV (.csv, .tsv, .csv.gz) or Parquet (.parquet), "
                                            "one row per shown collection."),
    out: Path = typer.Option(..., "--out", "-o", help="Joined DSJSON log to write, one decision per line "
                                                      "(gzip if it ends in .gz). Written only if a decision is."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", "-m",
                                           help="TOML column mapping (keys as the flags below, with '_' for "
                                                "'-'; 'context' a list). Flags override it."),
    action: Optional[str] = typer.Option(None, help="Column with the chosen collection id."),
    reward: Optional[str] = typer.Option(None, help="Column with the reward (higher is better; true/false "
                                                    "read as 1/0)."),
    propensity: Optional[str] = typer.Option(None, help="Column with the probability the chosen collection was "
                                                        "shown with, in (0, 1]."),
    context: Optional[str] = typer.Option(None, help="Context columns, comma-separated, each "
                                                     "column, group:column or group:column:num|cat, e.g. 'user:age,user:segment'. "
                                                     "Bare columns go to group 'context'; numeric columns are "
                                                     "numeric features, others categorical."),
    slot: Optional[str] = typer.Option(None, help="Slot/position column: rows with one event id and different "
                                                  "slots form one multi-slot decision. Single-choice rows (no "
                                                  "event column) stay one decision each at their position: "
                                                  "replay values each position on its own rows, with the "
                                                  "collections seen at that position as its candidates (so "
                                                  "'uniform' is uniform over them), and the page as the sum "
                                                  "of the positions. Without it every row is a single-slot "
                                                  "decision."),
    slot_id: Optional[str] = typer.Option(None, help="Slot id for single-slot decisions (default: slot_0)."),
    event: Optional[str] = typer.Option(None, help="Event id column (default: 'row-<N>' from the row number)."),
    timestamp: Optional[str] = typer.Option(None, help="Timestamp column: ISO-8601 (naive = UTC) or epoch "
                                                       "seconds (default: epoch 0)."),
    candidates: Optional[str] = typer.Option(None, help="Column listing the collections available, e.g. "
                                                        "'a|b|c' (default: every action seen in the file; for "
                                                        "single-choice rows with --slot, every action seen at "
                                                        "that position)."),
    separator: Optional[str] = typer.Option(None, help="Separator in candidate and distribution cells "
                                                       "(default: '|')."),
    distribution: Optional[str] = typer.Option(None, help="Column with the full logged distribution, "
                                                          "'a:0.7|b:0.2|c:0.1'. Without it only the chosen "
                                                          "collection's propensity is known (marked chosen-only; "
                                                          "nothing is invented for the others)."),
    reward_is_cost: bool = typer.Option(False, "--reward-is-cost", help="The reward column is a cost "
                                                                        "(lower is better): negate it."),
    collection_features: Optional[Path] = typer.Option(None, help="CSV/Parquet with one row per collection; "
                                                                  "its columns become collection features."),
    collection_id_column: Optional[str] = typer.Option(None, help="Id column of --collection-features "
                                                                  "(default: id)."),
    surface: Optional[str] = typer.Option(None, help="Surface name recorded on each decision (default: default)."),
    rejects: Optional[Path] = typer.Option(None, "--rejects", help="Write rejected rows here as CSV "
                                                                   "(row, event_id, kind, reason)."),
    chunk_rows: int = typer.Option(50_000, min=1, help="Rows read per chunk; bounds memory on large files."),
) -> None:
    """Convert tabular logged bandit data into the joined log that `placement replay`
    and plain VW (--dsjson --ccb_explore_adf) read, with its columnar copy
    (OUT.columnar.parquet, what replay loads fast). Every bad row is reported with
    its row number (1 = first data row) and reason; a multi-slot decision with a
    bad row is rejected whole. Exit 0 when something was written (even with
    rejects), 2 when the input is unusable or every row was rejected."""
    err = Console(stderr=True)
    try:
        cmap = build_mapping(mapping, action=action, reward=reward, propensity=propensity, context=context,
                             slot=slot, default_slot=slot_id, event=event, timestamp=timestamp,
                             candidates=candidates, separator=separator, distribution=distribution,
                             reward_is_cost=reward_is_cost, collection_features=collection_features,
                             collection_id_column=collection_id_column, surface=surface)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task("importing rows", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total or None,
                           description="importing rows" if total else "scanning rows")

            summary = run_import(source, out, cmap, rejects_path=rejects, chunk_rows=chunk_rows,
                                 sample=SHOWN_REJECTS, progress=progress)
    except MappingError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2)
    _report(summary, rejects)
    if not summary.decisions_written:
        typer.secho(f"error: no decision written: all {summary.rows_read} rows were rejected", err=True,
                    fg=typer.colors.RED)
        raise typer.Exit(2)


def _report(summary: ImportSummary, rejects: Path | None) -> None:
    table = Table(title="placement import", show_header=False)
    table.add_row("rows read", str(summary.rows_read))
    table.add_row("decisions written", str(summary.decisions_written))
    table.add_row("rows written", str(summary.rows_written))
    table.add_row("rows rejected", str(summary.rows_rejected))
    table.add_row("decisions rejected", str(summary.decisions_rejected))
    for kind, n in sorted(summary.by_kind.items()):
        table.add_row(f"  rejected: {kind}", str(n))
    if summary.decisions_written:
        table.add_row("output", str(summary.output))
    Console(width=120).print(table)
    if summary.rows_rejected:
        where = f"; all in {rejects}" if rejects else "; use --rejects FILE for the full list"
        typer.secho(f"warning: {summary.rows_rejected} rows rejected{where}", err=True, fg=typer.colors.YELLOW)
        for r in summary.rejects:
            typer.echo(f"  row {r.row} (event {r.event}): {r.reason}", err=True)
        if summary.rows_rejected > len(summary.rejects):
            typer.echo(f"  ... and {summary.rows_rejected - len(summary.rejects)} more", err=True)
