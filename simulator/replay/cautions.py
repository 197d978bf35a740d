"""What a scientist would write in the margin of a replay's results: the
warnings that say when an estimate should not be acted on as it stands.

Each warning is ``{"kind", "scope", "message"}`` (kinds: ``low_ess``,
``max_weight_share``, ``support_deficiency``, ``estimators_disagree``,
``extrapolation``); the table, the JSON and the report all show them. They
are computed from what the estimates already rest on (the target's
distributions, the importance weights, the diagnostics and the intervals), so
they cost one pass over arrays the replay holds anyway.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Sequence

import numpy as np

from simulator.replay.logarrays import ReplayLog

MAX_WEIGHT_SHARE = 0.05  # one decision carrying more of a slot's total weight than this
MIN_SUPPORT = 10  # a (slot, collection) pair logged fewer times than this is thin data
EXTRAPOLATION_SHARE = 0.5  # target mass on thin pairs above this: mostly extrapolation
SUPPORT_MASS = 0.01  # target mass on actions the logger could not show above this

Warning = dict[str, str]


def policy_warnings(log: ReplayLog, dist: np.ndarray, weights: dict[int, np.ndarray], diag: dict[str, Any],
                    estimates: Sequence[dict[str, Any]], min_ess: float) -> list[Warning]:
    """Every warning about one target's results, page first then per slot."""
    out: list[Warning] = []
    out += _disagreements(estimates)
    for k, label in enumerate(log.slot_labels):
        scope = f"slot:{label}"
        d = diag["slots"].get(label, {})
        if "refused" in d:
            continue
        out += _weight_warnings(scope, d, weights.get(k), min_ess)
    out += _extrapolation(log, dist)
    return out


def _weight_warnings(scope: str, d: dict[str, Any], w: np.ndarray | None, min_ess: float) -> list[Warning]:
    out: list[Warning] = []
    n, ess = d.get("n", 0), d.get("effective_sample_size")
    if ess is not None and n and ess < min_ess:
        out.append(_w("low_ess", scope, f"effective sample size {ess:.0f} of {n} decisions (< {min_ess:g}): "
                                        "the weighted estimates (IPS, SNIPS, DR, ...) rest on about "
                                        f"{max(ess, 1):.0f} decisions; their intervals are optimistic"))
    if w is not None and w.size and w.sum() > 0:
        share = float(w.max() / w.sum())
        if share > MAX_WEIGHT_SHARE:
            out.append(_w("max_weight_share", scope,
                          f"one decision carries {share:.0%} of the total importance weight (max weight "
                          f"{float(w.max()):.3g}): the weighted estimates hinge on it"))
    mass = d.get("unsupported_mass") or 0.0
    if mass > SUPPORT_MASS:
        out.append(_w("support_deficiency", scope,
                      f"{mass:.0%} of the target's probability goes to collections the logger could never show "
                      f"(in {d.get('support_deficiency', 0.0):.0%} of decisions): IPS cannot see that part "
                      "(biased low) and DM/DR guess it from the reward model"))
    return out


def _interval(entry: dict[str, Any]) -> tuple[float, float] | None:
    """The entry's normal interval, else its first usable one."""
    ivs = entry.get("intervals") or {}
    for method in ("normal", *ivs):
        iv = ivs.get(method) or {}
        if "lower" in iv and "upper" in iv:
            return float(iv["lower"]), float(iv["upper"])
    return None


def _disagreements(estimates: Sequence[dict[str, Any]]) -> list[Warning]:
    """Per scope, the estimator pairs whose intervals do not overlap."""
    by_scope: dict[str, list[tuple[str, tuple[float, float]]]] = {}
    for e in estimates:
        iv = _interval(e) if "value" in e else None
        if iv is not None:
            by_scope.setdefault(e["scope"], []).append((e["estimator"], iv))
    out = []
    for scope, entries in by_scope.items():
        pairs = [f"{a.upper()} [{ia[0]:.4g}, {ia[1]:.4g}] vs {b.upper()} [{ib[0]:.4g}, {ib[1]:.4g}]"
                 for (a, ia), (b, ib) in combinations(entries, 2) if ia[1] < ib[0] or ib[1] < ia[0]]
        if pairs:
            out.append(_w("estimators_disagree", scope,
                          "estimators disagree beyond their intervals: " + "; ".join(pairs[:4])
                          + (f" (+{len(pairs) - 4} more)" if len(pairs) > 4 else "")
                          + ". The reward model (DM) or the weights (IPS) are off; trust neither alone"))
    return out


def collection_index(log: ReplayLog) -> tuple[np.ndarray, list[str]]:
    """(n, A) global collection index of each event's candidate (-1 padded)
    and the collection ids: candidate indices are per event, ids are not."""
    return log.collection, log.collection_ids


def _extrapolation(log: ReplayLog, dist: np.ndarray) -> list[Warning]:
    """Per slot, the target's mass on (slot, collection) pairs the log shows
    fewer than MIN_SUPPORT times: there every value is the reward model's guess."""
    index, ids = collection_index(log)
    out = []
    for k, label in enumerate(log.slot_labels):
        rows = np.flatnonzero(log.present[:, k])
        if not rows.size:
            continue
        shown = index[rows, log.action[rows, k]]
        counts = np.bincount(shown[shown >= 0], minlength=len(ids))
        idx = index[rows]
        thin = (idx >= 0) & (counts[np.maximum(idx, 0)] < MIN_SUPPORT)
        share = float((dist[rows, k] * thin).sum(axis=1).mean())
        if share > EXTRAPOLATION_SHARE:
            out.append(_w("extrapolation", f"slot:{label}",
                          f"{share:.0%} of the target's choices go to collections the log shows fewer than "
                          f"{MIN_SUPPORT} times at this slot: its value is mostly extrapolation (DM/DR lean on "
                          "the reward model there, IPS on a handful of decisions)"))
    return out


def _w(kind: str, scope: str, message: str) -> Warning:
    return {"kind": kind, "scope": scope, "message": message}
