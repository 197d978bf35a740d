"""Grids of policies x scenarios x seeds, run in local processes or on Ray.

Each grid cell is one independent :func:`simulator.runner.run`, fully
determined by (policy, scenario, seed, decisions), so the engine that runs it
(a process pool here, a local Ray or an existing Ray cluster) cannot change
the numbers, only the wall time. Ray is imported only when asked for.

Against a live server (``remote``) the cells run one after another in this
process: they share the server, which keeps learning from one run to the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import pandas as pd

from simulator import fanout
from simulator.specs import PolicySpec, parse_policy
from simulator.runner import remote_policy_check, run
from simulator.world import Scenario, load_scenario

if TYPE_CHECKING:
    from simulator.remote import RemoteOptions

# Columns that measure the machine, not the policy: ignored when comparing runs.
TIMING_COLUMNS = ("seconds",)


@dataclass(frozen=True)
class Job:
    """One grid cell; picklable, so it travels to a process or a Ray worker."""

    policy: PolicySpec
    scenario: Scenario
    seed: int
    decisions: int
    log_path: str | None = None
    true_value_of: tuple[PolicySpec, ...] = ()  # policies valued on this run's events
    remote: "RemoteOptions | None" = None  # run the engine on this server


@dataclass
class GridResult:
    summary: pd.DataFrame  # one row per run
    records: pd.DataFrame  # one row per (run, decision, slot)


def run_job(job: Job, _shared: Any = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Run one cell; module-level so process pools and Ray can call it."""
    result = run(job.scenario, job.policy, job.seed, job.decisions, log_path=job.log_path,
                 target=job.remote, true_value_of=job.true_value_of)
    records = result.records
    for col in ("policy", "scenario", "slot", "collection", "kind", "oracle_collection"):
        records[col] = records[col].astype("category")
    return result.summary, records.drop(columns=["event_id"])


def log_path_for(base: Path | str, job: Job, single: bool) -> str:
    """The joined-log file of one run: ``base`` itself for a single run, else
    ``<stem>.<policy>.<scenario>.s<seed><suffix>`` beside it."""
    base = Path(base)
    if single:
        return str(base)
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{job.policy.name}.{job.scenario.name}.s{job.seed}")
    return str(base.with_name(f"{base.stem}.{tag}{base.suffix or '.json'}"))


def make_jobs(policies: Sequence[str | PolicySpec], scenarios: Sequence[str | Path | Scenario],
              seeds: Sequence[int], decisions: int, log_path: Path | str | None = None,
              true_value_of: Sequence[str | PolicySpec] = (), remote: "RemoteOptions | None" = None) -> list[Job]:
    """The grid, in a fixed order (scenario, seed, policy)."""
    specs = [parse_policy(p) for p in policies]
    loaded = [s if isinstance(s, Scenario) else load_scenario(s) for s in scenarios]
    targets = tuple(parse_policy(t) for t in true_value_of)
    if not specs or not loaded or not seeds:
        raise ValueError("a grid needs at least one policy, scenario and seed")
    if remote is not None:
        specs = [remote_policy_check(p) for p in specs]
    jobs = [Job(p, s, int(seed), decisions, None, targets, remote) for s in loaded for seed in seeds for p in specs]
    if log_path is not None:
        single = len(jobs) == 1
        jobs = [replace(j, log_path=log_path_for(log_path, j, single)) for j in jobs]
    return jobs


def run_grid(policies: Sequence[str | PolicySpec], scenarios: Sequence[str | Path | Scenario],
             seeds: Sequence[int], decisions: int, *, workers: int | None = None, ray: bool = False,
             ray_address: str | None = None, log_path: Path | str | None = None,
             on_done: Callable[[dict[str, Any]], None] | None = None,
             true_value_of: Sequence[str | PolicySpec] = (), remote: "RemoteOptions | None" = None) -> GridResult:
    """Run every policy on every scenario and seed.

    ``workers`` defaults to the number of cores; 1 runs in this process.
    ``ray=True`` uses a local Ray, ``ray_address`` an existing cluster (which
    needs this package and VW installed). ``on_done`` sees each run's summary.
    ``true_value_of`` values those policies on each run's events; ``remote``
    runs the engine on a live server, in this process, one run at a time."""
    jobs = make_jobs(policies, scenarios, seeds, decisions, log_path, true_value_of, remote)
    if remote is not None and (ray or ray_address):
        raise ValueError("a grid against a server (--target) runs in this process: drop --ray/--ray-address")
    where = fanout.FanOut(1 if remote is not None else workers, ray, ray_address)

    def done(_: int, output: tuple[dict[str, Any], pd.DataFrame]) -> None:
        if on_done:
            on_done(output[0])

    outputs = fanout.fan_out(run_job, jobs, where=where, on_done=done)
    summary = pd.DataFrame([s for s, _ in outputs])
    records = pd.concat([r for _, r in outputs], ignore_index=True)
    for col in ("policy", "scenario", "slot", "collection", "kind", "oracle_collection"):
        records[col] = records[col].astype("category")
    return GridResult(summary, records)


def save_results(frame: pd.DataFrame, path: Path | str) -> Path:
    """Write a results table as Parquet or CSV, chosen by the file suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        raise ValueError(f"results file '{path}' must end in .parquet or .csv")
    return path


def comparable(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary without timing columns, sorted: equal across engines for the same grid."""
    cols = [c for c in summary.columns if c not in TIMING_COLUMNS]
    return summary[cols].sort_values(["scenario", "seed", "policy"]).reset_index(drop=True)
