"""``placement simulate``: compare policies on simulated merchandising worlds.

Register with ``app.command("simulate")(simulator.cli.simulate)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from simulator.experiments import run_grid, save_results
from simulator.policies import BASELINES, parse_policy
from simulator.report import print_results, write_report
from simulator.world import DEFAULT_SCENARIO, ScenarioError, builtin_scenarios, load_scenario

DEFAULT_POLICIES = ["engine", "uniform", "greedy-ctr", "rule", "oracle"]


def _seeds(text: str) -> list[int]:
    """'0,1,2' or '0-4' or '3' (a count from 0 when given as 'N' alone is
    ambiguous, so a single number is one seed)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            low, high = (int(x) for x in part.split("-", 1))
            seeds.extend(range(low, high + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise typer.BadParameter("give at least one seed, e.g. 0,1,2 or 0-4")
    return seeds


def simulate(
    scenario: Annotated[list[str], typer.Option(
        "--scenario", "-s",
        help=f"Scenario: a built-in name ({', '.join(builtin_scenarios())}) or a TOML file path. Repeatable.",
    )] = [DEFAULT_SCENARIO],  # noqa: B006 (typer reads the default)
    decisions: Annotated[int, typer.Option(
        "--decisions", "-n", min=1,
        help="Decisions (requests) per run; the scenario's days are spread over them.")] = 5000,
    policy: Annotated[list[str], typer.Option(
        "--policy", "-p",
        help="Policy to compare. Repeatable: engine (default LearningSettings), engine:<explorer> "
             "(epsilon, softmax, bag, cover, squarecb, rnd, first), " + ", ".join(BASELINES) + ".")] = DEFAULT_POLICIES,  # noqa: B006
    seeds: Annotated[str, typer.Option(
        "--seeds", help="Seeds to run, e.g. '0,1,2' or '0-4'. Same seed, same numbers.")] = "0,1,2",
    workers: Annotated[Optional[int], typer.Option(
        "--workers", "-w", min=1, help="Parallel processes (or Ray CPUs); default: number of cores.")] = None,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Run the grid on a local Ray instead of a process pool (needs the 'ray' extra).")] = False,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="Run on an existing Ray cluster at this address (e.g. ray://head:10001); "
                              "the cluster needs VW and this package's dependencies.")] = None,
    report: Annotated[Optional[Path], typer.Option(
        "--report", help="Write an HTML report with PNG plots into this directory.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Save the per-run results table here (.parquet or .csv).")] = None,
    log: Annotated[Optional[Path], typer.Option(
        "--log", help="Write the joined DSJSON log here; with several runs, one file per run named "
                      "<stem>.<policy>.<scenario>.s<seed><suffix> beside it.")] = None,
) -> None:
    """Simulate customers, collections and slots, and compare placement policies
    (the engine's explorers against uniform, greedy, a merchandiser's rule and the oracle)."""
    console = Console()
    try:
        specs = [parse_policy(p) for p in policy]
        scenarios = [load_scenario(s) for s in scenario]
    except (ValueError, ScenarioError) as exc:
        raise typer.BadParameter(str(exc)) from None
    if out is not None and out.suffix not in (".parquet", ".csv"):
        raise typer.BadParameter(f"--out '{out}' must end in .parquet or .csv")
    seed_list = _seeds(seeds)
    total = len(specs) * len(scenarios) * len(seed_list)
    columns = (TextColumn("[bold]simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("runs"),
               TimeElapsedColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("", total=total)

        def done(summary: dict) -> None:
            progress.update(task, advance=1,
                            description=f"{summary['policy']} / {summary['scenario']} / seed {summary['seed']}")

        result = run_grid(specs, scenarios, seed_list, decisions, workers=workers, ray=ray,
                          ray_address=ray_address, log_path=log, on_done=done)
    print_results(result.summary, console)
    if out is not None:
        console.print(f"results: {save_results(result.summary, out)}")
    if report is not None:
        console.print(f"report: {write_report(report, result)}")
    if log is not None:
        console.print(f"joined log(s): {log if total == 1 else str(log.parent / (log.stem + '.*'))}")


app = typer.Typer(help="Simulate merchandising worlds and compare placement policies.")
app.command("simulate")(simulate)

if __name__ == "__main__":
    app()
