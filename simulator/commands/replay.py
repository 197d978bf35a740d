"""``placement replay``: off-policy evaluation and counterfactual training of
candidate policies on joined logs. The work is :mod:`simulator.replay`; this is
the command line around it (options, progress, outputs, exit codes)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from bandit.vwargs import LearningSettings, SettingsError
from simulator.replay.options import DEFAULT_GRID, ESTIMATORS, INTERVALS, SLATE, EstimationConfig, ReplayOptions
from simulator.specs import VW_KEYS, TargetError, parse_settings

_POLICY_HELP = (
    "Target policy to evaluate; repeat for several. 'uniform', 'logged' (the logging policy), 'baseline' "
    "(slot default collection, else first candidate), 'vw:key=value,...' (a VW learning setting trained on "
    "the log in time order with progressive validation; keys: " + ", ".join(VW_KEYS) + "; e.g. "
    "vw:algorithm=epsilon,epsilon=0.1,learning_rate=0.3,interactions=CA+SA; plain 'vw' = defaults), "
    "'model:DIR[:surface[:version]]' (a saved model version under DIR/models/<surface>/, default the "
    "CURRENT one) or 'probs:FILE' (JSON lines {event_id, slot_id, probabilities: {collection: p}})."
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


def _split(values: list[str]) -> tuple[str, ...]:
    """Accept both repeated options and comma-separated lists."""
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


def replay(
    logs: list[Path] = typer.Argument(..., help="Joined DSJSON logs (the engine's DATA/joined/<surface>/*.dsjson, "
                                                "ccb or cb layout, .gz allowed) or directories holding them."),
    policy: list[str] = typer.Option(["uniform", "logged", "baseline", "vw"], "--policy", "-p", help=_POLICY_HELP),
    estimator: list[str] = typer.Option(list(ESTIMATORS), "--estimator", "-e",
                                        help="Off-policy estimators (repeat or comma-separate): "
                                             + ", ".join(ESTIMATORS) + ". 'switch-dr:L' / 'dr-os:L' set lambda "
                                             "(defaults 20 / 100)."),
    slate: list[str] = typer.Option(list(SLATE), "--slate",
                                    help="Slate estimators for the page value: iips (independent IPS), pi "
                                         "(pseudo-inverse), sips (standard IPS). Give 'none' for none."),
    interval: list[str] = typer.Option(list(INTERVALS), "--interval",
                                       help="Interval methods: normal, bootstrap (page scope only), bernstein "
                                            "(IPS only, rewards in [0, r_max])."),
    level: float = typer.Option(0.95, min=0.5, max=0.999, help="Confidence level of every interval."),
    bootstrap_resamples: int = typer.Option(1000, min=50, max=100_000, help="Bootstrap resamples."),
    reward_max: Optional[float] = typer.Option(None, help="A-priori upper bound on a slot reward for the "
                                                          "Bernstein interval and the clipping of every "
                                                          "interval [default: 1 for 0/1 rewards, else the "
                                                          "observed maximum, flagged as heuristic]."),
    reward_min: Optional[float] = typer.Option(None, help="A-priori lower bound on a slot reward, for the clipping "
                                                          "of every interval [default: 0 for 0/1 rewards, else "
                                                          "the observed minimum]."),
    min_ess: float = typer.Option(100.0, min=0.0, help="Flag estimates resting on fewer effective samples "
                                                       "(ESS of the weights; decisions for DM)."),
    search: bool = typer.Option(False, "--search", help="Train a grid of VW settings on the log "
                                                        "(progressive validation, parallel) and recommend a change "
                                                        "only if a candidate's lower bound beats the current "
                                                        "setting's estimate."),
    grid: list[str] = typer.Option([], "--grid", help="Search axis 'key=v1|v2|...' (repeat); settings not named "
                                                      "keep the current value. Default: "
                                                      + "; ".join(DEFAULT_GRID) + "."),
    current: str = typer.Option("", help="The setting in production, as 'key=value,...' (vw: keys) "
                                         "[default: LearningSettings()]."),
    search_estimator: str = typer.Option("dr", help="Estimator ranking the search and measuring importance "
                                                    "(dm, ips, snips, dr, sndr, ...)."),
    importance: bool = typer.Option(False, "--importance", help="Feature-group importance of the current "
                                                                "setting's learned policy: retrain without each "
                                                                "group and report the value lost, with an "
                                                                "interval."),
    workers: int = typer.Option(0, min=0, help="Worker processes for VW training [default 0 = all cores]; "
                                               "with --ray the CPUs of the local Ray."),
    ray: bool = typer.Option(False, "--ray", help="Train the VW targets (and --search/--importance candidates) "
                                                  "as tasks on a local Ray instead of a process pool (needs the "
                                                  "'ray' extra); same numbers as the pool."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Run the VW targets on this existing Ray cluster (e.g. "
                                                   "'auto' or 'ray://head:10001'; implies --ray; the cluster "
                                                   "needs VW installed, this code is shipped with the job)."),
    json_out: Optional[Path] = typer.Option(None, "--json-out", "-j", help="Write every number to this JSON file."),
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Write an HTML report with PNG plots into "
                                                                       "this directory."),
    slots: bool = typer.Option(False, "--slots", help="Also show per-slot estimates in the terminal table."),
    seed: int = typer.Option(0, help="Seed of the reward-model folds and the bootstrap."),
    output_format: str = typer.Option("table", "--format", "-f",
                                      help="How results go to stdout: table (fitted to the terminal width, "
                                           "no number or policy name cut), json (the --json-out document), "
                                           "csv (one row per estimate) or markdown (summary, estimates, "
                                           "warnings)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars and no table."),
) -> None:
    """Evaluate target policies on logged traffic: DM, IPS, SNIPS, DR, SNDR, Switch-DR and
    DRos per slot and for the page, slate estimators, intervals and weight diagnostics.
    Refusals (e.g. zero or missing propensities) are shown as such. Exit 2 on bad input."""
    from bandit.logformat.events import LogFormatError
    from simulator.replay.pipeline import run_replay
    from simulator.replay.output import FORMATS, print_results, render
    from simulator.replay.report import RichProgress, report as write_report, write_json

    if output_format not in FORMATS:
        _fail(f"--format '{output_format}': expected one of {', '.join(FORMATS)}")

    if ray or ray_address:
        try:
            import ray as _ray  # noqa: F401
        except ImportError:
            _fail("--ray/--ray-address need Ray: pip install 'placement-engine[ray]'")
    try:
        cfg = EstimationConfig(estimators=_split(estimator), slate=tuple(s for s in _split(slate) if s != "none"),
                               intervals=_split(interval), level=level, n_bootstrap=bootstrap_resamples,
                               seed=seed, reward_max=reward_max, reward_min=reward_min, min_ess=min_ess)
        current_settings = parse_settings(current, where="--current") if current else LearningSettings()
        options = ReplayOptions(policies=tuple(policy), estimation=cfg, workers=workers or None, ray=ray,
                                ray_address=ray_address, search=search,
                                grid=tuple(grid), current=current_settings, search_estimator=search_estimator,
                                importance=importance, importance_estimator=search_estimator)
        results = run_replay(logs, options, None if quiet else RichProgress())
    except (LogFormatError, TargetError, SettingsError, ValueError, OSError) as exc:
        _fail(str(exc))
        return
    if output_format != "table":
        typer.echo(render(results, output_format, slots), nl=False)
    elif not quiet:
        print_results(results, Console(), slots=slots)
    if json_out:
        typer.echo(f"results: {write_json(results, json_out)}", err=True)
    if report:
        typer.echo(f"report: {write_report(results, report)}", err=True)
