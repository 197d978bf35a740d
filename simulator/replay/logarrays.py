"""The log as arrays: joined events in time order, per slot.

Reward, logged action, logging propensity and candidate mask per (event,
slot): the mask holds what slot k could show given the *logged* earlier slots
(the slot walk of :class:`bandit.decision.DecisionInput`), which is what each
propensity is conditioned on.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bandit.logformat.events import JoinedEvent, LogFormatError, SkippedLines, read_joined
from simulator.specs import TargetError

_SUM_TOL = 1e-6


@dataclass
class ReplayLog:
    """A joined log as per-slot arrays, events in time order.

    Columns are slots by slot id (positions sort numerically), so a log of
    single-choice rows at several positions (an imported one with a position
    column) gets one column per position instead of pooling them.
    ``column[i][j]`` is the column of event i's j-th choice (targets and the
    reward model see choices in the event's own order).

    Events without a slot are padded there: reward 0, action 0, propensity
    1, mask only action 0, and every target is one-hot there -- weight 1 and
    reward 0, so a padded slot adds exactly nothing to a page value.
    """

    events: list[JoinedEvent]
    allowed: list[list[list[int]]]  # [event][slot] candidate indices available
    reward: np.ndarray  # (n, K)
    action: np.ndarray  # (n, K) int
    pscore: np.ndarray  # (n, K) NaN where missing
    mask: np.ndarray  # (n, K, A) bool
    present: np.ndarray  # (n, K) bool
    logged_dist: np.ndarray  # (n, K, A) the logging policy's ranking; NaN where unknown (chosen_only)
    slot_labels: list[str]
    sources: list[str] = field(default_factory=list)
    # (n,) events whose log carries only the chosen actions' propensities
    chosen_only: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    column: list[list[int]] = field(default_factory=list)
    # torn lines (a crash mid-write) the reader skipped, with file and line
    skipped: SkippedLines = field(default_factory=SkippedLines)
    # (n,) each event's drop probability under subsampling (the joined line's
    # pdrop; empty or zeros: a full log); estimates weight by 1 / (1 - pdrop)
    pdrop: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def positional(self) -> bool:
        """Every event fills one slot and there are several: rows at positions,
        not pages (the page value is then the sum of the position values)."""
        return self.shape[1] > 1 and bool((self.present.sum(axis=1) == 1).all())

    @property
    def n(self) -> int:
        return len(self.events)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.mask.shape  # type: ignore[return-value]

    @classmethod
    def from_events(cls, events: Iterable[JoinedEvent], sources: Sequence[str] = ()) -> "ReplayLog":
        """Arrays from joined events (sorted by decision time, stable)."""
        events = sorted(events, key=lambda e: e.decision.timestamp)
        if not events:
            raise LogFormatError("the log has no events")
        n = len(events)
        labels, columns = _slot_columns(events)
        k_max = len(labels)
        a_max = max(len(e.decision.inp.candidates) for e in events)
        if k_max == 0 or a_max == 0:
            raise LogFormatError("the log's events have no slots or no candidates")
        reward, pscore = np.zeros((n, k_max)), np.ones((n, k_max))
        action = np.zeros((n, k_max), dtype=np.int64)
        mask = np.zeros((n, k_max, a_max), dtype=bool)
        mask[:, :, 0] = True
        present = np.zeros((n, k_max), dtype=bool)
        logged = np.zeros((n, k_max, a_max))
        logged[:, :, 0] = 1.0
        allowed_all: list[list[list[int]]] = []
        for i, joined in enumerate(events):
            allowed_all.append(_fill_event(i, joined, columns[i], reward, action, pscore, mask, present, logged))
        chosen_only = np.array([e.decision.chosen_only for e in events], dtype=bool)
        pdrop = np.array([e.pdrop for e in events], dtype=float)
        return cls(events, allowed_all, reward, action, pscore, mask, present, logged, labels, list(sources),
                   chosen_only, columns, pdrop=pdrop)

    def by_choice(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(action, reward, present) indexed by each event's own choice order
        (n, J): what code reading ``event.decision.choices[j]`` needs."""
        j_max = max(len(c) for c in self.column)
        action, reward = np.zeros((self.n, j_max), dtype=np.int64), np.zeros((self.n, j_max))
        present = np.zeros((self.n, j_max), dtype=bool)
        for i, cols in enumerate(self.column):
            action[i, :len(cols)], reward[i, :len(cols)] = self.action[i, cols], self.reward[i, cols]
            present[i, :len(cols)] = True
        return action, reward, present

    def to_columns(self, per_choice: np.ndarray) -> np.ndarray:
        """(n, J, ...) by choice order -> (n, K, ...) by slot column (zeros where padded)."""
        out = np.zeros((self.n, self.shape[1]) + per_choice.shape[2:], dtype=per_choice.dtype)
        for i, cols in enumerate(self.column):
            out[i, cols] = per_choice[i, :len(cols)]
        return out


MAX_KEYED_SLOTS = 64  # more distinct slot ids than this: columns by position in the event


def _slot_columns(events: Sequence[JoinedEvent]) -> tuple[list[str], list[list[int]]]:
    """Slot labels and each event's choice -> column map: one column per slot
    id (integer ids numerically, else by earliest position then first seen);
    with too many ids (or an event naming one twice), columns by position."""
    first: dict[str, tuple[int, int]] = {}
    for i, e in enumerate(events):
        for j, choice in enumerate(e.decision.choices):
            pos = first.get(choice.slot_id, (j, i))
            first[choice.slot_id] = min(pos, (j, i))
    repeated = any(len({c.slot_id for c in e.decision.choices}) < len(e.decision.choices) for e in events)
    if len(first) > MAX_KEYED_SLOTS or repeated:
        k_max = max(len(e.decision.choices) for e in events)
        slot_ids: list[Counter[str]] = [Counter() for _ in range(k_max)]
        for e in events:
            for k, choice in enumerate(e.decision.choices):
                slot_ids[k][choice.slot_id] += 1
        labels = [c.most_common(1)[0][0] if len(c) == 1 else f"#{k}" for k, c in enumerate(slot_ids)]
        return labels, [list(range(len(e.decision.choices))) for e in events]
    if all(s.isdigit() for s in first):
        labels = sorted(first, key=int)
    else:
        labels = sorted(first, key=lambda s: first[s])
    index = {s: k for k, s in enumerate(labels)}
    return labels, [[index[c.slot_id] for c in e.decision.choices] for e in events]


def _fill_event(i: int, joined: JoinedEvent, cols: list[int], reward: np.ndarray, action: np.ndarray,
                pscore: np.ndarray, mask: np.ndarray, present: np.ndarray, logged: np.ndarray) -> list[list[int]]:
    d = joined.decision
    n_cand = len(d.inp.candidates)
    allowed_event = []
    for choice in d.choices:
        if not 0 <= choice.action < n_cand:
            raise LogFormatError(f"event {d.event_id}: slot {choice.slot_id} logged action {choice.action} "
                                 f"but the event has {n_cand} candidates")
    for (j, allowed), choice in zip(d.inp.walk([c.action for c in d.choices]), d.choices):
        k = cols[j]
        if choice.action not in allowed:  # the logger could choose it, so it was available
            allowed.append(choice.action)
        allowed_event.append(allowed)
        present[i, k] = True
        reward[i, k] = joined.rewards[j]
        action[i, k] = choice.action
        pscore[i, k] = choice.probability if choice.probability is not None else math.nan
        mask[i, k, 0] = False
        mask[i, k, allowed] = True
        if d.chosen_only:  # the logging distribution is unknown beyond the chosen action
            logged[i, k] = math.nan
            continue
        logged[i, k] = as_row(choice.ranking, allowed, logged.shape[-1], f"event {d.event_id} slot {choice.slot_id}",
                            lenient=True)
    return allowed_event


def as_row(dist: Iterable[tuple[int, float]], allowed: list[int], width: int, where: str,
         lenient: bool = False) -> np.ndarray:
    """A distribution as a dense row restricted to ``allowed``; renormalised only
    when off by more than float rounding (so the logged ranking stays exact)."""
    row = np.zeros(width)
    allowed_set = set(allowed)
    for a, p in dist:
        if a in allowed_set and p > 0 and math.isfinite(p):
            row[a] += p
    total = row.sum()
    if total <= 0:
        if lenient:  # an unusable logged ranking: uniform (only diagnostics use it)
            row[allowed] = 1.0 / len(allowed)
            return row
        raise TargetError(f"{where}: the target puts no probability on any available collection")
    if abs(total - 1.0) > _SUM_TOL:
        row /= total
    return row


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given; a directory means its ``*.dsjson`` / ``*.dsjson.gz`` / ``*.json(.gz)`` files."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and
                           any(p.name.endswith(s) for s in (".dsjson", ".dsjson.gz", ".json", ".json.gz", ".jsonl")))
            if not found:
                raise LogFormatError(f"{path}: directory has no .dsjson/.json(.gz) files")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise LogFormatError(f"{path}: no such file or directory")
    return out


def load_log(paths: Sequence[Path]) -> ReplayLog:
    """The joined logs as arrays; torn lines are skipped, and reported (see ``skipped``)."""
    files = expand_paths(paths)
    skipped = SkippedLines()
    log = ReplayLog.from_events(read_joined(files, skipped), [str(p) for p in files])
    log.skipped = skipped
    return log



def log_summary(log: ReplayLog) -> dict[str, Any]:
    rewards = log.reward[log.present]
    ts = [e.decision.timestamp for e in log.events]
    if log.positional:  # rows are positions: the page is the sum of the positions' means
        page = sum(float(log.reward[log.present[:, k], k].mean()) for k in range(log.shape[1])
                   if log.present[:, k].any())
    else:
        page = float(log.reward.sum(axis=1).mean())
    return {"files": log.sources, "events": log.n, "slots": log.slot_labels, "max_candidates": log.shape[2],
            "slot_decisions": int(log.present.sum()), "mean_reward_per_slot": float(rewards.mean()),
            "mean_page_reward": page, "positional": log.positional,
            "reward_range": [float(rewards.min()), float(rewards.max())] if rewards.size else [0.0, 0.0],
            "reward_observed_share": float(np.mean([o for e in log.events for o in e.observed])),
            "first_timestamp": min(ts), "last_timestamp": max(ts),
            "torn_lines_skipped": len(log.skipped),
            "torn_lines": [f"{path}:{number}" for path, number in log.skipped.where]}


