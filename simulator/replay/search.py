"""``--search``: counterfactually train a grid of VW settings on a log and
recommend a change only when it is clearly better.

Every candidate is trained on the log in time order with progressive
validation (valued on each event before learning from it), in parallel
processes. Candidates are ranked by the lower bound of the page value's
interval (the chosen estimator, normal interval at the run's level): a
conservative ranking that does not reward a lucky high-variance estimate.
A change is recommended only when the best candidate's *lower* bound beats
the current setting's *point* estimate.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Sequence

from bandit.ope.estimate import EstimationRefused
from bandit.ope.intervals import normal_interval
from bandit.vwargs import LearningSettings
from simulator.replay.estimation import page_value, refusal
from simulator.replay.options import DEFAULT_GRID
from simulator.replay.progressive import ProgressiveTask, run_targets
from simulator.replay.targets import TargetSpec
from simulator.specs import TargetError, parse_settings, settings_label

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from simulator.replay.logarrays import ReplayLog
    from simulator.replay.options import ReplayOptions
    from simulator.replay.progress import ProgressSink



def grid_settings(axes: Sequence[str], base: LearningSettings) -> list[LearningSettings]:
    """The product of ``key=v1|v2`` axes applied to ``base``; combinations that
    differ only in settings the algorithm ignores collapse to one."""
    parsed: list[list[str]] = []
    for axis in axes:
        key, eq, values = axis.partition("=")
        options = [v.strip() for v in values.split("|") if v.strip()]
        if not eq or not options:
            raise TargetError(f"grid axis '{axis}' must look like key=value1|value2")
        parsed.append([f"{key.strip()}={v}" for v in options])
    seen: dict[str, LearningSettings] = {}
    for combo in itertools.product(*parsed):
        settings = parse_settings(",".join(combo), where=f"grid {','.join(combo)}", base=base)
        seen.setdefault(settings_label(settings), settings)
    return list(seen.values())


def recommend(current: dict[str, Any], ranked: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Change only if the best other candidate's lower bound exceeds the
    current setting's estimate; otherwise keep the current setting."""
    if "value" not in current:
        return {"change": False, "reason": f"the current setting's estimate was refused "
                                           f"({current.get('refused', 'unknown')}); nothing to compare against"}
    others = [c for c in ranked if c["name"] != current["name"] and "lower" in c]
    if not others:
        return {"change": False, "reason": "no other candidate has an estimate"}
    best = others[0]
    if best["lower"] > current["value"]:
        return {"change": True, "to": best["name"], "settings": best.get("settings"),
                "reason": f"lower bound {best['lower']:.4g} of {best['name']} beats the current estimate "
                          f"{current['value']:.4g}"}
    return {"change": False, "best_alternative": best["name"],
            "reason": f"best alternative's lower bound {best['lower']:.4g} does not beat the current estimate "
                      f"{current['value']:.4g}"}


def rank(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """By lower bound, then estimate; refusals last."""
    return sorted(entries, key=lambda e: (0, -e["lower"], -e["value"]) if "lower" in e else (1, 0.0, 0.0))


def candidate_entry(log: "ReplayLog", dist: "np.ndarray", q: "np.ndarray", name: str,
                    settings: LearningSettings, estimator: str, level: float) -> dict[str, Any]:
    """The page value of one trained candidate with its interval, or its refusal."""
    entry: dict[str, Any] = {"name": name, "settings": settings.to_dict()}
    try:
        est = page_value(log, dist, q, estimator)
        ci = normal_interval(est, level)
    except (EstimationRefused, ValueError) as exc:
        return {**entry, **refusal(exc)}
    return {**entry, "value": float(est.value), "lower": float(ci.lower), "upper": float(ci.upper)}


def search_settings(log: "ReplayLog", q: "np.ndarray", options: "ReplayOptions",
                    sink: "ProgressSink") -> dict[str, Any]:
    """Train the grid (current setting included) and recommend."""
    current = options.current.validate()
    candidates = [current] + [s for s in grid_settings(options.grid or DEFAULT_GRID, current)
                              if settings_label(s) != settings_label(current)]
    tasks = [ProgressiveTask(TargetSpec("vw", settings_label(s), s)) for s in candidates]
    with sink.task(f"searching {len(tasks)} settings", total=log.n * len(tasks)) as advance:
        dists = run_targets(log, tasks, options.workers, advance)
    level = options.estimation.level
    entries = [candidate_entry(log, d, q, t.spec.label, s, options.search_estimator, level)
               for t, s, d in zip(tasks, candidates, dists)]
    ranked = rank(entries)
    current_entry = entries[0]
    return {"estimator": options.search_estimator, "level": level, "interval": "normal",
            "current": current_entry, "ranked": ranked, "recommendation": recommend(current_entry, ranked)}
