"""Offline evaluation of target policies on the engine's joined logs, end to end.

1. :func:`simulator.replay.logarrays.load_log` reads joined DSJSON logs (ccb or
   cb layout, ``.gz`` too) into per-slot arrays.
2. :func:`simulator.replay.progressive.run_targets` replays every target over
   the log in time order (progressive validation), fanned out.
3. :func:`simulator.replay.reward_model.fit_reward_model` cross-fits the one
   reward model (:mod:`bandit.ope.reward_model`) for DM and the DR family and
   measures its held-out quality.
4. :func:`simulator.replay.estimation.evaluate_policy` runs the estimators per
   slot and for the page, with intervals and diagnostics.
5. :func:`run_replay` ties it together (plus ``--search`` and importance) and
   returns one JSON-ready dict; :mod:`simulator.replay.report` prints and
   plots it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from simulator import fanout
from simulator.replay.estimation import NEEDS_FULL_DISTRIBUTION, check_config, evaluate_policy
from simulator.replay.importance import feature_importance
from simulator.replay.logarrays import ReplayLog, load_log, log_summary
from simulator.replay.options import ESTIMATOR_PARAMS, EstimationConfig, ReplayOptions
from simulator.replay.progress import ProgressSink
from simulator.replay.progressive import (
    COLUMN_TARGETS,
    ProgressiveTask,
    builtin_distributions,
    events_known,
    run_targets,
    run_task,
)
from simulator.replay.reward_model import fit_reward_model
from simulator.replay.search import search_settings
from simulator.replay.summary import summarize
from simulator.replay.targets import ExternalProbabilities, TargetSpec, parse_policy
from simulator.specs import TargetError


def build_targets(log: ReplayLog, policies: Sequence[str]) -> list[TargetSpec]:
    """Parse and check target specs against the log (external files fully)."""
    specs = []
    labels: set[str] = set()
    for text in policies:
        spec = parse_policy(text)
        if spec.kind == "probs":
            assert spec.path is not None
            if not events_known(log, spec.path):  # or unreadable as columns: the line-by-line check names it
                ExternalProbabilities(spec.path).check_events(set(log.event_ids))
        if spec.label in labels:
            raise TargetError(f"policy '{text}' is given twice")
        labels.add(spec.label)
        specs.append(spec)
    return specs


def run_replay(paths: Sequence[Path] | ReplayLog, options: ReplayOptions = ReplayOptions(),
               progress: ProgressSink | None = None) -> dict[str, Any]:
    """Evaluate every target (and optionally search and importance) on a log;
    the returned dict is the JSON results file. With ``options.ray`` /
    ``ray_address`` every VW fan-out (targets, search, importance) runs on
    one Ray session."""
    where = fanout.FanOut(options.workers, options.ray, options.ray_address)
    with fanout.using(where):
        return _run_replay(paths, options, progress)


def _needs_reward_model(cfg: EstimationConfig, options: ReplayOptions) -> bool:
    """Whether any estimate asked for reads q_hat (DM and the DR family)."""
    wanted = {name.partition(":")[0].lower().replace("_", "-") for name in cfg.estimators}
    if options.search:
        wanted.add(options.search_estimator)
    if options.importance:
        wanted.add(options.importance_estimator)
    return bool(wanted & set(NEEDS_FULL_DISTRIBUTION))


def _run_replay(paths: Sequence[Path] | ReplayLog, options: ReplayOptions,
                progress: ProgressSink | None) -> dict[str, Any]:
    cfg = check_config(options.estimation)
    sink = progress or ProgressSink()
    log = paths if isinstance(paths, ReplayLog) else load_log(paths)
    specs = build_targets(log, options.policies)
    if _needs_reward_model(cfg, options):
        fit = fit_reward_model(log, seed=cfg.seed)
        q, quality = fit.q, fit.quality
    else:  # IPS, SNIPS and the slate estimators never read q: fitting it would be wasted time
        q, quality = np.zeros(log.shape), None
    columns = [s.kind in COLUMN_TARGETS for s in specs]  # computed as arrays, one at a time (memory)
    tasks = [ProgressiveTask(s) for s, c in zip(specs, columns) if not c]
    with sink.task("replaying targets", total=log.n * len(tasks)) as advance:
        learned = iter(run_targets(log, tasks, options.workers, advance))
    policies = []
    for spec, by_columns in zip(specs, columns):
        dist = (builtin_distributions(log, spec) if by_columns else None)
        if dist is None:  # a learned target, or a file the columns cannot vouch for (named errors)
            dist = next(learned) if not by_columns else run_task(ProgressiveTask(spec), log)
        partial = log.chosen_only if spec.kind == "logged" else None
        result = evaluate_policy(log, dist, q, cfg, partial)
        dist = None  # n x K x A floats: not alive while the next target's are built
        notes = result.pop("notes")
        if spec.kind == "model" and spec.meta.get("examples_learned"):
            notes.append(f"the saved model learned from {spec.meta['examples_learned']} examples; if those "
                         "include this log the estimate is in-sample (optimistic)")
        policies.append({"name": spec.label, "kind": spec.kind, "meta": {k: v for k, v in spec.meta.items()},
                         "settings": spec.settings.to_dict() if spec.settings else None,
                         "notes": notes, **result})
    results: dict[str, Any] = {
        "log": log_summary(log),
        "config": {"estimators": list(cfg.estimators), "slate": list(cfg.slate), "intervals": list(cfg.intervals),
                   "level": cfg.level, "n_bootstrap": cfg.n_bootstrap, "seed": cfg.seed,
                   "reward_max": cfg.reward_max, "reward_min": cfg.reward_min, "min_ess": cfg.min_ess,
                   "estimator_params": ESTIMATOR_PARAMS},
        "reward_model": quality,
        "policies": policies,
    }
    results["summary"] = summarize(results)
    if options.search:
        results["search"] = search_settings(log, q, options, sink)
    if options.importance:
        results["importance"] = feature_importance(log, q, options, sink)
    return results


