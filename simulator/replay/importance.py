"""Which feature groups the learned policy needs: ablation importance.

Method. Train the reference VW setting on the log with progressive validation
and estimate its page value V (default DR). Then, for each feature group G,
train the same setting on the same log with G removed from every event --
a context group from the shared features, a collection or slot group from
every collection or slot, the identity namespaces ``A`` (collection id) and
``S`` (slot id) by giving every collection/slot the same id -- and estimate
V_-G on the same rounds. The importance of G is V - V_-G: the value the
policy loses without it. Both estimates are means of per-round (linearised)
contributions over the same rounds, so the paired difference of contributions
gives a normal interval for the drop that accounts for their correlation.

Reading it: a drop whose interval excludes 0 means the group carries signal
the policy uses; ~0 means the policy does as well without it (uninformative,
or redundant with another group). Progressive validation values the whole
learning curve, so a group that only speeds up learning also shows a drop.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from bandit.ope.estimate import EstimationRefused, make_estimate
from bandit.logformat.events import JoinedEvent
from bandit.features import ACTION, CONTEXT, SLOT
from bandit.ope.intervals import normal_interval
from simulator.replay.estimation import page_value, refusal
from simulator.replay.progressive import ProgressiveTask, run_targets
from simulator.replay.targets import TargetSpec
from simulator.specs import settings_label

if TYPE_CHECKING:  # pragma: no cover
    from simulator.replay.logarrays import ReplayLog
    from simulator.replay.options import ReplayOptions
    from simulator.replay.progress import ProgressSink

_ANON = "_"  # the one id every collection/slot gets when its identity is ablated


def feature_groups(log: "ReplayLog") -> list[str]:
    """Ablatable groups present in the log: C.<g>, A, A.<g>, S, S.<g>."""
    context, action, slot = set(), set(), set()
    for e in log.events:
        inp = e.decision.inp
        context |= {g.name for g in inp.context}
        action |= {g.name for c in inp.candidates for g in c.groups}
        slot |= {g.name for s in inp.slots for g in s.groups}
    return ([f"{CONTEXT}.{g}" for g in sorted(context)] + [ACTION] + [f"{ACTION}.{g}" for g in sorted(action)]
            + [SLOT] + [f"{SLOT}.{g}" for g in sorted(slot)])


def ablate_event(joined: JoinedEvent, group: str) -> JoinedEvent:
    """The same decision with one feature group removed (or made constant)."""
    role, _, name = group.partition(".")
    d = joined.decision
    inp = d.inp
    if role == CONTEXT:
        inp = replace(inp, context=tuple(g for g in inp.context if g.name != name))
    elif role == ACTION and not name:
        inp = replace(inp, candidates=tuple(replace(c, id=_ANON) for c in inp.candidates))
    elif role == ACTION:
        inp = replace(inp, candidates=tuple(replace(c, groups=tuple(g for g in c.groups if g.name != name))
                                            for c in inp.candidates))
    elif role == SLOT and not name:
        inp = replace(inp, slots=tuple(replace(s, id=_ANON, default_collection="") for s in inp.slots))
    elif role == SLOT:
        inp = replace(inp, slots=tuple(replace(s, groups=tuple(g for g in s.groups if g.name != name))
                                       for s in inp.slots))
    else:
        raise ValueError(f"feature group '{group}' must be C.<group>, A, A.<group>, S or S.<group>")
    return replace(joined, decision=replace(d, inp=inp))


def importance_entry(log: "ReplayLog", q: np.ndarray, full: np.ndarray, ablated: np.ndarray,
                     group: str, estimator: str, level: float) -> dict[str, Any]:
    """V - V_-G with a paired normal interval, or the refusal."""
    try:
        with_g = page_value(log, full, q, estimator)
        without = page_value(log, ablated, q, estimator)
    except (EstimationRefused, ValueError) as exc:
        return {"group": group, **refusal(exc)}
    drop = make_estimate("drop", with_g.contributions - without.contributions)
    ci = normal_interval(drop, level)
    return {"group": group, "value_without": float(without.value), "drop": float(drop.value),
            "lower": float(ci.lower), "upper": float(ci.upper), "significant": bool(ci.lower > 0)}


def feature_importance(log: "ReplayLog", q: np.ndarray, options: "ReplayOptions",
                       sink: "ProgressSink") -> dict[str, Any]:
    """Ablation importance of every feature group for the reference setting."""
    settings = (options.importance_settings or options.current).validate()
    spec = TargetSpec("vw", settings_label(settings), settings)
    groups = feature_groups(log)
    tasks = [ProgressiveTask(spec)] + [ProgressiveTask(spec, partial(ablate_event, group=g)) for g in groups]
    with sink.task(f"importance of {len(groups)} feature groups", total=log.n * len(tasks)) as advance:
        dists = run_targets(log, tasks, options.workers, advance)
    estimator, level = options.importance_estimator, options.estimation.level
    try:
        reference: dict[str, Any] = {"value": float(page_value(log, dists[0], q, estimator).value)}
    except (EstimationRefused, ValueError) as exc:
        reference = refusal(exc)
    entries = [importance_entry(log, q, dists[0], d, g, estimator, level) for g, d in zip(groups, dists[1:])]
    entries.sort(key=lambda e: -e.get("drop", -np.inf))
    return {"method": "ablation (retrain without the group, paired difference of page values)",
            "policy": spec.label, "estimator": estimator, "level": level, "reference": reference,
            "groups": entries}
