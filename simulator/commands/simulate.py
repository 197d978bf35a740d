"""``placement simulate``: compare policies on simulated merchandising worlds.

The root command line (``placement_cli``) registers it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from typing import TYPE_CHECKING

from rich.table import Table

from simulator.scenarios import DEFAULT_SCENARIO, builtin_scenarios
from simulator.specs import BASELINES, VW_KEYS, parse_policy

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_POLICIES = ["vw", "uniform", "greedy-ctr", "rule", "oracle"]


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
    policy: Annotated[Optional[list[str]], typer.Option(
        "--policy", "-p",
        help="Policy to compare, in the syntax 'placement replay' shares. Repeatable: vw (the engine with "
             "default settings), vw:key=value,... (keys: " + ", ".join(VW_KEYS) + "; e.g. "
             "vw:algorithm=epsilon,epsilon=0.1), " + ", ".join(BASELINES) + ". "
             f"Default: {', '.join(DEFAULT_POLICIES)}; with --target: vw. The old 'engine' and "
             "'engine:<explorer>' still work (deprecated).")] = None,
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
    true_value: Annotated[Optional[list[str]], typer.Option(
        "--true-value",
        help="Also compute this policy's true value on each run's logged events (repeatable; any --policy "
             "name). 'value' is what 'placement replay' estimates from the run's --log: per event, the sum over "
             "slots of the policy's expected reward given the collections the logged earlier slots took, a "
             "learning policy valued before it learns each event. Printed, and saved with --out as "
             "true_value[POLICY] columns.")] = None,
    target: Annotated[Optional[str], typer.Option(
        "--target", metavar="HOST:PORT",
        help="Drive a live 'placement serve' at HOST:PORT over gRPC instead of an in-process engine: register "
             "the scenario's collections, Decide each request, send each reward once the simulated clock "
             "reaches it. Only with --policy vw (the server's own learning settings apply); runs go one "
             "after another and the server keeps learning across them. Rewards later than the scenario's "
             "reward window are dropped, and so are those the server receives after its join.window_seconds, "
             "as in production.")] = None,
    token: Annotated[Optional[str], typer.Option(
        "--token", envvar="PLACEMENT_ADMIN_TOKEN",
        help="With --target: bearer token sent with every call (needed when the server protects its admin "
             "service, which PutCollections uses). Also read from $PLACEMENT_ADMIN_TOKEN, as the server does.")] = None,
    pace: Annotated[Optional[float], typer.Option(
        "--pace", min=0.001,
        help="With --target: wall seconds per simulated reward window (the loop waits when ahead). Set the "
             "server's join.window_seconds a little above it, so the server learns each decision about as "
             "many decisions later as the in-process loop does. Default: as fast as the server answers.")] = None,
    candidates: Annotated[str, typer.Option(
        "--candidates",
        help="With --target: 'request' sends each request's collections with their time-varying features; "
             "'catalog' sends none and lets the server use its catalog (static features, active windows).")] = "request",
    run_id: Annotated[str, typer.Option(
        "--run-id",
        help="With --target: prefix for event ids, so the same seed can run again against the same server "
             "(which refuses a reused event id).")] = "",
    ca_cert: Annotated[Optional[Path], typer.Option(
        "--ca-cert", help="With --target: connect over TLS, trusting this CA certificate (PEM).")] = None,
    client_cert: Annotated[Optional[Path], typer.Option(
        "--client-cert", help="With --target: mutual TLS, present this certificate (PEM; with --client-key). "
                              "Alone with --client-key, the system's CAs are trusted.")] = None,
    client_key: Annotated[Optional[Path], typer.Option(
        "--client-key", help="With --target: the private key of --client-cert (PEM).")] = None,
) -> None:
    """Simulate customers, collections and slots, and compare placement policies
    (the engine's explorers against uniform, greedy, a merchandiser's rule and the oracle),
    in-process or against a live server (--target)."""
    from simulator.experiments import run_grid, save_results
    from simulator.world import ScenarioError, load_scenario
    from simulator.report import print_results, write_report
    from simulator.runner import remote_policy_check

    console = Console()
    remote = None
    if target is None and (pace or run_id or candidates != "request" or ca_cert or client_cert or client_key):
        raise typer.BadParameter("--pace, --candidates, --run-id and the TLS options apply only with --target")
    try:
        specs = [parse_policy(p) for p in (policy or (["vw"] if target else DEFAULT_POLICIES))]
        scenarios = [load_scenario(s) for s in scenario]
        targets = [parse_policy(t) for t in (true_value or [])]
        if target is not None:
            from simulator.remote import RemoteOptions

            specs = [remote_policy_check(p) for p in specs]
            remote = RemoteOptions(target, token=token, candidates=candidates, run_id=run_id, pace=pace,
                                   ca_cert=ca_cert, client_cert=client_cert, client_key=client_key).validate()
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

        try:
            result = run_grid(specs, scenarios, seed_list, decisions, workers=workers, ray=ray,
                              ray_address=ray_address, log_path=log, on_done=done, true_value_of=targets,
                              remote=remote)
        except (ValueError, RuntimeError) as exc:  # RemoteError: the server said no, the message says why
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    print_results(result.summary, console)
    if targets:
        console.print(true_value_table(result.summary, [t.name for t in targets]))
    if remote is not None:
        _remote_notes(result.summary, console)
    if out is not None:
        console.print(f"results: {save_results(result.summary, out)}")
    if report is not None:
        console.print(f"report: {write_report(report, result)}")
    if log is not None:
        console.print(f"joined log(s): {log if total == 1 else str(log.parent / (log.stem + '.*'))}")


def true_value_table(summary: pd.DataFrame, targets: list[str]) -> Table:
    """Per run: each target's true value per decision next to the logged policy's."""
    table = Table(title="True value per decision on each run's logged events")
    for name in ("scenario", "seed", "logged policy", "its expected", *targets):
        table.add_column(name, justify="left" if name in ("scenario", "logged policy") else "right")
    for _, row in summary.sort_values(["scenario", "seed", "policy"]).iterrows():
        table.add_row(str(row["scenario"]), str(row["seed"]), str(row["policy"]),
                      f"{row['expected_reward'] / row['decisions']:.4f}",
                      *[f"{row[f'true_value[{t}]']:.4f}" for t in targets])
    return table


def _remote_notes(summary: pd.DataFrame, console: Console) -> None:
    """What the server saw, and a hint when it dropped rewards as late."""
    for _, row in summary.iterrows():
        console.print(f"{row['target']}: seed {row['seed']}: {int(row['server_rewards'])} rewards accepted, "
                      f"{int(row['server_expired_rewards'])} after the server's join window, "
                      f"{int(row['model_versions_seen'])} model versions served, "
                      f"{row['wall_seconds_per_window']:.2f} wall s per simulated reward window")
    if summary["server_expired_rewards"].sum() > 0:
        console.print("[yellow]some rewards reached the server after its join window and were dropped "
                      "(as in production): raise join.window_seconds above the wall seconds per simulated "
                      "window, or slow the simulation with --pace[/yellow]")
