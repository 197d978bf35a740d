"""The VW policy: decide which collection goes into which slot, and learn.

One :class:`Policy` wraps one VW ``--ccb_explore_adf`` workspace. The server
keeps one for serving (predict only) and one in its learner (learn only) and
moves weights between them as numbered model files; the simulator and offline
replay use a single one in-process. Either way the decide and learn code is
this module's.

Sampling: VW returns, per slot, a probability distribution over the candidates
(exploration included). We draw from it with a random number seeded by the
event id, skipping collections already placed in an earlier slot of the same
request and those not eligible for the slot (renormalising what is left), so
the probability we log is exactly the one the choice was drawn with.
"""

from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Sequence

import pylibvw
from vowpalwabbit import pyvw

from bandit.features import Candidate, FeatureGroup, SlotSpec, context_spaces, vw_text
from bandit.vwargs import LearningSettings, vw_arguments


class Mode(str, Enum):
    ONLINE = "online"
    APPRENTICE = "apprentice"
    LOGGING_ONLY = "logging_only"


class NoEligibleCandidate(ValueError):
    """A slot has no collection left that it may show."""


@dataclass(frozen=True)
class DecisionInput:
    """What one decision is about. ``eligible[k]`` lists candidate indices slot k
    may show, or is None when every candidate is allowed."""

    context: tuple[FeatureGroup, ...]
    slots: tuple[SlotSpec, ...]
    candidates: tuple[Candidate, ...]
    eligible: tuple[tuple[int, ...] | None, ...] = ()

    def allowed(self, k: int) -> Sequence[int]:
        if self.eligible and self.eligible[k] is not None:
            return self.eligible[k]
        return range(len(self.candidates))


@dataclass(frozen=True)
class SlotChoice:
    """One slot's outcome: the chosen candidate index, the probability it was
    drawn with, and every still-available candidate ranked by probability."""

    slot_id: str
    action: int
    probability: float
    ranking: tuple[tuple[int, float], ...]
    model_top: int = -1  # what the learned policy would serve (apprentice agreement)


@dataclass
class Decision:
    choices: list[SlotChoice] = field(default_factory=list)


def seeded_rng(event_id: str) -> random.Random:
    """The same event id always draws the same numbers."""
    digest = hashlib.sha256(event_id.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _slot_label(choice: SlotChoice | None, cost: float | None) -> str:
    if choice is None or cost is None:
        return ""
    head = f"{choice.action}:{cost:.9g}:{choice.probability:.9g}"
    rest = [f"{a}:{p:.9g}" for a, p in choice.ranking if a != choice.action]
    return ",".join([head, *rest])


def head_lines(inp: DecisionInput, action_text: Sequence[str] | None = None) -> list[str]:
    """The shared and action lines of an example: the same for every slot of a
    request, so a decision builds them once. ``action_text`` may hold the
    candidates' precomputed ``|A ...`` strings (they change only with the catalog)."""
    texts = action_text or [vw_text(c.spaces()) for c in inp.candidates]
    return [f"ccb shared {vw_text(context_spaces(inp.context))}", *(f"ccb action {t}" for t in texts)]


def slot_line(inp: DecisionInput, k: int, label: str = "", allowed: Sequence[int] | None = None) -> str:
    """Slot k's line; ``allowed`` (else the slot's eligibility) becomes VW's include list."""
    if allowed is None and inp.eligible:
        allowed = inp.eligible[k]
    include = ",".join(map(str, allowed)) if allowed is not None and len(allowed) < len(inp.candidates) else ""
    head = " ".join(part for part in ("ccb slot", label, include) if part)
    return f"{head} {vw_text(inp.slots[k].spaces())}"


def vw_lines(inp: DecisionInput, choices: Sequence[SlotChoice] | None = None,
             costs: Sequence[float] | None = None, only_slot: int | None = None,
             include: Sequence[int] | None = None) -> list[str]:
    """The VW text example (every slot, or ``only_slot`` restricted to
    ``include``); with choices and costs it is labelled."""
    lines = head_lines(inp)
    for k in range(len(inp.slots)) if only_slot is None else (only_slot,):
        label = _slot_label(choices[k] if choices else None, costs[k] if costs else None)
        lines.append(slot_line(inp, k, label, include))
    return lines


class Policy:
    """A VW contextual-bandit learner for one surface. Thread-safe: VW is not,
    so calls into the workspace are serialised."""

    def __init__(self, settings: LearningSettings, model_path: Path | None = None, version: str = "0"):
        self.settings = settings.validate()
        self.arguments = vw_arguments(settings)
        extra = f" -i {model_path}" if model_path else ""
        self._ws = pyvw.Workspace(self.arguments + extra)
        self._lock = threading.Lock()
        self.version = version

    def slot_distribution(self, inp: DecisionInput, k: int, allowed: Sequence[int],
                          head: list[str] | None = None) -> list[tuple[int, float]]:
        """VW's probability distribution (exploration included) for slot k over
        ``allowed``. One slot per predict: in a multi-slot predict VW would
        condition later slots on its own internal draw, not on ours."""
        text = "\n".join([*(head or head_lines(inp)), slot_line(inp, k, allowed=allowed)])
        with self._lock:
            examples = self._ws._parse(text)
            try:
                # pyvw's predict wraps every example in Python objects first; the
                # native calls are ~5x faster at 50 candidates (VW pinned in pyproject).
                pylibvw.vw.predict_multi(self._ws, examples)
                pdf = examples[0].get_decision_scores()
            finally:
                self._ws._finish_example_multi_ex(examples)
        return _renormalise(pdf[0] if pdf else [], list(allowed))

    def decide(self, inp: DecisionInput, event_id: str, mode: Mode = Mode.ONLINE,
               action_text: Sequence[str] | None = None) -> Decision:
        """Fill every slot in order, never the same collection twice."""
        rng = seeded_rng(event_id)
        head = head_lines(inp, action_text)
        used: set[int] = set()
        decision = Decision()
        for k, slot in enumerate(inp.slots):
            allowed = [a for a in inp.allowed(k) if a not in used]
            if not allowed:
                raise NoEligibleCandidate(f"slot '{slot.id}' has no eligible collection left")
            ranking = self.slot_distribution(inp, k, allowed, head)
            model_top = ranking[0][0]
            if mode is Mode.APPRENTICE:
                action = _baseline(inp, slot, allowed)
                choice = SlotChoice(slot.id, action, 1.0, ((action, 1.0),), model_top)
            else:
                action, prob = _draw(ranking, rng.random())
                choice = SlotChoice(slot.id, action, prob, tuple(ranking), model_top)
            used.add(choice.action)
            decision.choices.append(choice)
        return decision

    def scores(self, inp: DecisionInput, k: int, allowed: Sequence[int]) -> dict[int, float]:
        """VW's predicted reward (-cost) of each allowed candidate in slot k."""
        text = "\n".join([*head_lines(inp), slot_line(inp, k, allowed=allowed)])
        with self._lock:
            examples = self._ws._parse(text)
            try:
                pylibvw.vw.predict_multi(self._ws, examples)
                return {a: -examples[1 + a].get_partial_prediction() for a in allowed}
            finally:
                self._ws._finish_example_multi_ex(examples)

    def explain(self, inp: DecisionInput, k: int, allowed: Sequence[int], action: int,
                top: int = 5, max_features: int = 48) -> list[tuple[str, str, float]]:
        """Which features raised or lowered the chosen collection's predicted
        reward: each feature is left out in turn and the score recomputed
        (exact for VW's model, interactions included; bounded in count)."""
        base = self.scores(inp, k, allowed)[action]
        out = []
        for where, name, ablated in list(_ablations(inp, k, action))[:max_features]:
            out.append((where, name, base - self.scores(ablated, k, allowed)[action]))
        out.sort(key=lambda item: -abs(item[2]))
        return out[:top]

    def learn(self, inp: DecisionInput, choices: Sequence[SlotChoice], rewards: Sequence[float]) -> None:
        """One update from a joined decision; VW minimises cost = -reward."""
        lines = vw_lines(inp, choices, [-r for r in rewards])
        with self._lock:
            self._ws.learn(lines)

    def save(self, path: Path) -> None:
        with self._lock:
            self._ws.save(str(path))

    def close(self) -> None:
        with self._lock:
            self._ws.finish()


def _without(groups: tuple[FeatureGroup, ...], group: str, feature: str) -> tuple[FeatureGroup, ...]:
    return tuple(FeatureGroup(g.name, {n: v for n, v in g.features.items() if not (g.name == group and n == feature)})
                 for g in groups)


def _ablations(inp: DecisionInput, k: int, action: int):
    """(role.group, feature, input without that feature) for the features that
    can move slot k's score of ``action``."""
    for g in inp.context:
        for name in g.features:
            yield f"context.{g.name}", name, replace(inp, context=_without(inp.context, g.name, name))
    slot = inp.slots[k]
    for g in slot.groups:
        for name in g.features:
            slots = list(inp.slots)
            slots[k] = replace(slot, groups=_without(slot.groups, g.name, name))
            yield f"slot.{g.name}", name, replace(inp, slots=tuple(slots))
    cand = inp.candidates[action]
    for g in cand.groups:
        for name in g.features:
            cands = list(inp.candidates)
            cands[action] = replace(cand, groups=_without(cand.groups, g.name, name))
            yield f"collection.{g.name}", name, replace(inp, candidates=tuple(cands))


class LogLearner:
    """Learns straight from joined-log lines with VW's own DSJSON parser: the
    same weights as :meth:`Policy.learn` on the same events (a test checks),
    at the speed of ``vw --dsjson``. Its saved models serve through Policy."""

    def __init__(self, settings: LearningSettings, model_path: Path | None = None):
        self.arguments = vw_arguments(settings)
        extra = f" -i {model_path}" if model_path else ""
        self._ws = pyvw.Workspace(vw_arguments(settings, dsjson=True) + extra)

    def learn_line(self, line: str) -> None:
        examples = self._ws._parse(line)  # native calls, as in Policy.slot_distribution
        try:
            pylibvw.vw.learn_multi(self._ws, examples)
        finally:
            self._ws._finish_example_multi_ex(examples)

    def save(self, path: Path) -> None:
        self._ws.save(str(path))


def _baseline(inp: DecisionInput, slot: SlotSpec, allowed: list[int]) -> int:
    if slot.default_collection:
        for a in allowed:
            if inp.candidates[a].id == slot.default_collection:
                return a
    return allowed[0]


def _renormalise(pdf: Sequence[tuple[int, float]], allowed: list[int]) -> list[tuple[int, float]]:
    """Restrict a distribution to the allowed actions; uniform if it has no mass there."""
    allowed_set = set(allowed)
    mass = {a: p for a, p in pdf if a in allowed_set and p > 0}
    total = sum(mass.values())
    if total <= 0:
        return [(a, 1.0 / len(allowed)) for a in allowed]
    ranked = sorted(((a, mass.get(a, 0.0) / total) for a in allowed), key=lambda ap: (-ap[1], ap[0]))
    return ranked


def _draw(ranking: Sequence[tuple[int, float]], u: float) -> tuple[int, float]:
    acc = 0.0
    for action, prob in ranking:
        acc += prob
        if u < acc and prob > 0:
            return action, prob
    for action, prob in reversed(ranking):  # float rounding: last with mass
        if prob > 0:
            return action, prob
    raise AssertionError("distribution has no mass")
