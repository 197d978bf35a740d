"""Learning defaults by measurement: a staged coordinate search (issue 14.3).

``nice -n 15 .venv/bin/python -m bench.defaults_grid [--decisions 3000] [--seeds 20] [--workers 2]``

Starting from today's :class:`bandit.vwargs.LearningSettings`, each setting in
:data:`AXES` is tried in turn at the values listed, the others held at the
best found so far; a value is kept only if it raises the mean share of the
oracle's expected reward over every scenario x seed by more than ``--margin``
points (a tie keeps the current value: a default moves only on evidence).
Every run is one :func:`simulator.runner.run` on the same request streams
(common random numbers), fanned out with :mod:`simulator.fanout`'s pool.
``--confirm N`` then runs today's default and the winner at N decisions.

Screening is at a short horizon on purpose (CPU budget); the scenario's days
are spread over the decisions, so a short run still passes every season, only
with fewer decisions per day to learn from. The Markdown report goes to stdout
(and ``--markdown``), each finished run to ``--out`` (CSV) as it finishes.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from bandit.vwargs import LearningSettings
from simulator.fanout import FanOut, fan_out
from simulator.runner import run
from simulator.specs import PolicySpec, settings_label
from simulator.world import load_scenario

SCENARIOS = ("seasonal-retail", "trend-shock", "cold-start")

# The coordinate axes, in search order: (setting, values tried). Exploration
# settings are prefixed "exploration.".
AXES: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("learning_rate", (0.05, 0.2)),
    ("exploration.gamma_scale", (30.0, 100.0)),
    ("exploration.floor", (0.02,)),
    ("power_t", (0.25, 0.75)),
    ("coin", (True,)),
    ("interactions", (("CA", "SA", "CSA", "AA"),)),
)

def with_value(settings: LearningSettings, axis: str, value: Any) -> LearningSettings:
    """``settings`` with one axis set to ``value``."""
    if axis.startswith("exploration."):
        return settings.with_exploration(**{axis.split(".", 1)[1]: value}).validate()
    return replace(settings, **{axis: value}).validate()


@dataclass(frozen=True)
class Run:
    settings: LearningSettings
    scenario: str
    seed: int
    decisions: int


def run_one(item: Run, _shared: Any = None) -> dict[str, Any]:
    """One engine run, scored as a share of the oracle (module level: the pool pickles it)."""
    warnings.simplefilter("ignore", FutureWarning)
    label = settings_label(item.settings)
    started = time.process_time()
    s = run(load_scenario(item.scenario), PolicySpec(label, item.settings), item.seed, item.decisions).summary
    return {"settings": label, "scenario": item.scenario, "seed": item.seed, "decisions": item.decisions,
            "share": 100 * s["expected_reward"] / s["oracle_reward"], "cpu_s": time.process_time() - started}


class Grid:
    """Runs settings on every scenario x seed, memoised, rows appended to a CSV."""

    def __init__(self, scenarios: Sequence[str], seeds: Sequence[int], workers: int, out: Path | None):
        self.scenarios, self.seeds, self.workers, self.out = tuple(scenarios), tuple(seeds), workers, out
        self.rows: list[dict[str, Any]] = []
        self._score: dict[tuple[str, int], float] = {}

    def score(self, candidates: Sequence[LearningSettings], decisions: int) -> list[float]:
        """Mean share of the oracle (over scenarios, then seeds) of each candidate."""
        todo = [Run(c, sc, seed, decisions) for c in candidates if (settings_label(c), decisions) not in self._score
                for sc in self.scenarios for seed in self.seeds]
        todo = list({(settings_label(r.settings), r.scenario, r.seed): r for r in todo}.values())
        rows = fan_out(run_one, todo, where=FanOut(workers=self.workers), on_done=self._done)
        frame = pd.DataFrame(rows)
        for label, group in frame.groupby("settings") if len(frame) else ():
            self._score[(label, decisions)] = float(group.groupby("scenario")["share"].mean().mean())
        return [self._score[(settings_label(c), decisions)] for c in candidates]

    def _done(self, _i: int, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.out is not None:
            pd.DataFrame([row]).to_csv(self.out, mode="a", header=not self.out.exists(), index=False)
        print(f"  {row['settings']} {row['scenario']} s{row['seed']}: {row['share']:.1f} % "
              f"({row['cpu_s']:.0f} CPU s)", file=sys.stderr, flush=True)


def coordinate_search(grid: Grid, start: LearningSettings, axes: Sequence[tuple[str, Sequence[Any]]],
                      decisions: int, margin: float) -> tuple[LearningSettings, list[dict[str, Any]]]:
    """One pass over the axes; returns the winner and one line per axis tried."""
    best, steps = start, []
    for axis, values in axes:
        candidates = [with_value(best, axis, v) for v in values]
        scores = grid.score([best, *candidates], decisions)
        current, tried = scores[0], scores[1:]
        top = max(range(len(values)), key=lambda i: tried[i])
        moved = tried[top] > current + margin
        steps.append({"axis": axis, "values": values, "scores": tried, "kept": values[top] if moved else "unchanged",
                      "current": current})
        if moved:
            best = candidates[top]
    return best, steps


def report(grid: Grid, steps: list[dict[str, Any]], start: LearningSettings, best: LearningSettings,
           decisions: int, confirm: int | None) -> str:
    lines = [f"Screening: {decisions} decisions, seeds {grid.seeds[0]}-{grid.seeds[-1]}, "
             f"scenarios {', '.join(grid.scenarios)}; mean % of oracle (mean over scenarios of the mean over seeds)",
             "", "| setting | values tried: % of oracle | current | kept |", "|---|---|---:|---|"]
    for st in steps:
        tried = ", ".join(f"{_fmt(v)}: {s:.2f}" for v, s in zip(st["values"], st["scores"]))
        lines.append(f"| {st['axis']} | {tried} | {st['current']:.2f} | {_fmt(st['kept'])} |")
    frame = pd.DataFrame(grid.rows)
    per = frame.groupby(["decisions", "settings", "scenario"])["share"].agg(["mean", "std", "count"]).reset_index()
    lines += ["", f"Start: `{settings_label(start)}`", f"Winner: `{settings_label(best)}`", "",
              "| decisions | settings | scenario | seeds | % of oracle (mean ± sd) |", "|---:|---|---|---:|---:|"]
    wanted = {settings_label(start), settings_label(best)}
    for _, r in per[per["settings"].isin(wanted)].iterrows():
        lines.append(f"| {r['decisions']} | `{r['settings']}` | {r['scenario']} | {int(r['count'])} "
                     f"| {r['mean']:.2f} ± {r['std']:.2f} |")
    lines.append(f"\nCPU: {frame['cpu_s'].sum() / 60:.1f} CPU-minutes over {len(frame)} runs")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "+".join(value) if isinstance(value, tuple) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", "-n", type=int, default=2500, help="decisions per screening run")
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated built-in scenarios")
    parser.add_argument("--workers", type=int, default=2, help="processes of simulator.fanout's pool")
    parser.add_argument("--margin", type=float, default=0.3, help="points a value must gain to replace the current")
    parser.add_argument("--axes", default=",".join(a for a, _ in AXES), help="comma-separated subset of AXES, in order")
    parser.add_argument("--confirm", type=int, help="then run the start and the winner at this many decisions")
    parser.add_argument("--out", type=Path, help="append each run here (.csv)")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    axes = [(a, v) for name in args.axes.split(",") for a, v in AXES if a == name]
    grid = Grid(args.scenarios.split(","), range(args.seeds), args.workers, args.out)
    start = LearningSettings()
    best, steps = coordinate_search(grid, start, axes, args.decisions, args.margin)
    if args.confirm:
        grid.score([start, best], args.confirm)
    text = report(grid, steps, start, best, args.decisions, args.confirm)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
