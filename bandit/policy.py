"""The VW policy: decide which collection goes into which slot, and learn.

One :class:`Policy` wraps one VW ``--ccb_explore_adf`` workspace. The server
keeps one for serving (predict only) and one in its learner (learn only) and
moves weights between them as numbered model files; the simulator and offline
replay use a single one in-process. Either way the decide and learn code is
this module's.

Deciding is one multi-slot VW predict. VW fills the slots in order: each slot
sees its own features and its position (ccb's slot-index features, which
learning sees too), never a collection an earlier slot took, and only the
collections eligible for it; VW draws the slot's collection from its
distribution (exploration included) with a seed taken from the event id, so
the probability we log is exactly the one the choice was drawn with and a
repeated request gets the same answer.

With ``fill = "joint"`` a multi-slot decision is centred on the best whole
assignment instead: one predict, each slot offered its own copy of the
candidates, scores every collection at every slot's position; the best
assignment of those scores (the oracle's method,
:func:`bandit.assignment.best_assignment`) names each slot's target, and VW's
distribution for the slot over what earlier slots left (for SquareCB derived
from the same predict, :mod:`bandit.squarecb`; for other explorers one more
predict) is served with the target's and VW's top collection's probabilities
swapped. A slot taking its own best can take what a later slot needs more (a
bargain-hunter's deals collection on the homepage, where on the detail page it
would match the viewed category): in the seasonal world that was ~45 % of the
engine's regret. The draw is seeded from the event id as VW's is, and the
logged probability is the one drawn with. Learning is the same either way.

Candidates' examples are parsed and hashed once and reused while their text is
unchanged (they change only with the catalog); per request only the context
and slot lines are parsed.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import math
import random
import threading
from collections import OrderedDict
from dataclasses import replace
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pylibvw
from vowpalwabbit import pyvw

from bandit import squarecb
from bandit.assignment import best_assignment

from bandit.decision import Decision, DecisionInput, Mode, NoEligibleCandidate, SlotChoice, fill_in_order
from bandit.features import FeatureGroup, SlotSpec, context_spaces, vw_text
from bandit.learning_order import learning_order
from bandit.vwargs import LearningSettings, vw_arguments

log = logging.getLogger(__name__)


def _event_hash(event_id: str) -> str:
    """What every draw of a decision is seeded from: the same id, the same draws."""
    return hashlib.sha256(event_id.encode("utf-8")).hexdigest()[:16]


def slot_seeds(event_id: str, n: int) -> list[str]:
    """VW's sampling seed (a tag) for each of n slots."""
    digest = _event_hash(event_id)
    return [f"{digest}.{k}" for k in range(n)]


def _slot_label(choice: SlotChoice | None, cost: float | None) -> str:
    if choice is None or cost is None:
        return ""
    head = f"{choice.action}:{cost:.9g}:{choice.probability:.9g}"
    rest = [f"{a}:{p:.9g}" for a, p in choice.ranking if a != choice.action]
    return ",".join([head, *rest])


def head_lines(inp: DecisionInput) -> list[str]:
    """The shared and action lines of an example (the same for every slot)."""
    return [f"ccb shared {vw_text(context_spaces(inp.context))}", *(c.action_line for c in inp.candidates)]


def slot_line(inp: DecisionInput, k: int, label: str = "", allowed: Sequence[int] | None = None,
              seed: str = "", explicit: bool = False) -> str:
    """Slot k's line; ``allowed`` (else the slot's eligibility) becomes VW's
    include list, written even when it lists every candidate if ``explicit``
    (indices into copies of the candidates); ``seed`` (a tag) seeds VW's
    draw for the slot."""
    if allowed is None and inp.eligible:
        allowed = inp.eligible[k]
    listed = allowed is not None and (explicit or len(allowed) < len(inp.candidates))
    include = _include_list(allowed) if listed else ""
    tag = f"'seed={seed}" if seed else ""
    head = " ".join(part for part in ("ccb slot", label, include, tag) if part)
    return f"{head} {vw_text(inp.slots[k].spaces())}"


def _include_list(allowed: Sequence[int]) -> str:
    """VW's include list; a range (a joint decision's copy of the candidates)
    is written once per process."""
    return _range_list(allowed) if isinstance(allowed, range) else ",".join(map(str, allowed))


@functools.lru_cache(maxsize=256)
def _range_list(allowed: range) -> str:
    return ",".join(map(str, allowed))


def _placeholders(k: int, first_index: int) -> tuple[list[str], list[str]]:
    """Action and slot lines that put slot k at position k on its own: k
    placeholder actions (VW indices from ``first_index``, after the
    candidates), taken by k featureless slots, leave every candidate to slot
    k. ccb conditions a slot on the earlier ones only through which
    collections are left, so this gives slot k's distribution over ``allowed``
    exactly as in a full decision (a test checks)."""
    return ([f"ccb action |_ {i}" for i in range(k)],
            [f"ccb slot {first_index + i} |_" for i in range(k)])


class _ParsedActions:
    """Candidates' VW examples by their text, parsed and hashed once. VW's ccb
    predict leaves an action example as it found it, so reuse gives the same
    predictions as a fresh parse (a test checks); a text used twice in one
    predict (twice in a request, or in copies of the candidates) gets a
    second example, kept beside the first. A parsed example takes ~32 KB
    (VW's 256 namespace slots), so the bound on examples held is what caps
    memory: 2,048 is 64 MB per serving policy. Used under the policy's lock."""

    def __init__(self, ws: pyvw.Workspace, capacity: int = 2048):
        self._ws = ws
        self._capacity = capacity
        self._cache: OrderedDict[str, list[pylibvw.example]] = OrderedDict()
        self._held = 0

    def examples(self, lines: Sequence[str], copies: int = 1,
                 tail: Sequence[str] = ()) -> list[pylibvw.example]:
        """Distinct examples for ``lines`` ``copies`` times over, then for ``tail``."""
        cache, used, out = self._cache, {}, []
        for line in itertools.chain(itertools.chain.from_iterable(itertools.repeat(lines, copies)), tail):
            i = used.get(line, 0)
            used[line] = i + 1
            held = cache.get(line)
            if held is None:
                held = cache[line] = []
            elif i == 0:
                cache.move_to_end(line)
            while i >= len(held):  # (>: evicted earlier in this very call)
                held.append(pylibvw.example(self._ws, CCB_LABEL, line))
                self._held += 1
                while self._held > self._capacity and len(cache) > 1:
                    self._held -= len(cache.popitem(last=False)[1])
            out.append(held[i])
        return out


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


CCB_LABEL = pylibvw.vw.lConditionalContextualBandit


_NOT_ALLOWED = 1e30  # as a cost; never in a best assignment (which masks by the slot walk anyway)


class _Scores(NamedTuple):
    """Predicted rewards, slots x candidates (-1e30 where a slot may not show
    a collection), and per slot k whether slots k.. all scored finitely
    (else a decision is not centred: VW's own distribution is served)."""

    values: np.ndarray
    usable: list[bool]


class Policy:
    """A VW contextual-bandit learner for one surface. Thread-safe: VW is not,
    so calls into the workspace (and the parsed candidates) are serialised."""

    def __init__(self, settings: LearningSettings, model_path: Path | None = None, version: str = "0"):
        self.settings = settings.validate()
        self.arguments = vw_arguments(settings)
        extra = f" -i {model_path}" if model_path else ""
        self._ws = pyvw.Workspace(self.arguments + extra)
        self._lock = threading.Lock()
        self._actions = _ParsedActions(self._ws)
        self.version = version

    def _predict(self, head: Sequence[str], slots: Sequence[str], partial: Sequence[int] = (),
                 copies: int = 1, tail: Sequence[str] = ()) -> tuple[list, list[float]]:
        """One ccb predict: the per-slot distributions (VW's drawn action first)
        and the score of each action in ``partial`` in the last slot that
        offered it. The actions are ``copies`` copies of the candidates
        (``head[1:]``), then ``tail``.

        Native calls, not pyvw's predict, which wraps every example in Python
        objects first (~5x slower at 50 candidates; VW pinned in pyproject).
        The examples are standalone, freed with their Python objects: no pool
        to return them to, so the candidates' can be kept."""
        with self._lock:
            shared = pylibvw.example(self._ws, CCB_LABEL, head[0])
            actions = self._actions.examples(head[1:], copies, tail)
            examples = [shared, *actions, *(pylibvw.example(self._ws, CCB_LABEL, s) for s in slots)]
            pylibvw.vw.predict_multi(self._ws, examples)
            return shared.get_decision_scores(), [actions[a].get_partial_prediction() for a in partial]

    def _alone(self, inp: DecisionInput, k: int, allowed: Sequence[int], head: list[str] | None,
               partial: Sequence[int] = ()) -> tuple[list, list[float]]:
        """Predict slot k at its position, over ``allowed`` (see _placeholders)."""
        actions, earlier = _placeholders(k, len(inp.candidates))
        return self._predict(head or head_lines(inp), [*earlier, slot_line(inp, k, allowed=allowed)],
                             partial, tail=actions)

    def slot_distribution(self, inp: DecisionInput, k: int, allowed: Sequence[int],
                          head: list[str] | None = None) -> list[tuple[int, float]]:
        """The served distribution (exploration included) for slot k over
        ``allowed`` (the collections earlier slots left it), ranked by
        probability: VW's, centred on the joint target when ``fill`` is joint."""
        if not self._joint(inp):
            return _ranked(self._alone(inp, k, allowed, head)[0][k], inp.slots[k])
        head = head or head_lines(inp)
        scores, pdfs = self._score_matrix(inp, head, first=k)
        return self._centred(inp, k, allowed, self._slot_pdf(inp, k, allowed, pdfs[k], head), scores)

    def _joint(self, inp: DecisionInput) -> bool:
        """The joint path: for several slots, and for one slot when the policy
        mixes a floor in itself (RegCB), since only this path draws its own."""
        return self.settings.fill == "joint" and (len(inp.slots) > 1 or self.settings.exploration.policy_floor > 0)

    def _score_matrix(self, inp: DecisionInput, head: list[str],
                      first: int = 0) -> tuple[_Scores, dict[int, list]]:
        """The model's predicted reward of every collection each slot
        ``first``.. may show, at the slot's position, and each of those
        slots' VW pdf over all it may show.

        One predict: each slot is offered its own copy of the candidates, so
        no slot's draw takes a collection from another, and each sits at its
        position (earlier slots' placeholders in front): the same
        distributions and scores as one predict per slot (a test checks)."""
        n, slots = len(inp.candidates), range(first, len(inp.slots))
        actions, earlier = _placeholders(first, n * len(slots))
        allowed = {k: inp.allowed(k) for k in slots}
        offered = {k: range(c * n, c * n + n) if isinstance(allowed[k], range) else [c * n + a for a in allowed[k]]
                   for c, k in enumerate(slots)}
        lines = [slot_line(inp, k, allowed=offered[k], explicit=True) for k in slots]
        pdfs, partial = self._predict(head, [*earlier, *lines], [i for k in slots for i in offered[k]],
                                      copies=len(slots), tail=actions)
        values = np.full((len(inp.slots), n), -_NOT_ALLOWED)
        costs = np.array(partial)
        if len(costs) == n * len(slots):  # no slot restricted (the usual case)
            values[first:] = -costs.reshape(len(slots), n)
        else:
            at = 0
            for k in slots:
                values[k, allowed[k]] = -costs[at:at + len(allowed[k])]
                at += len(allowed[k])
        finite = np.isfinite(values).all(axis=1)
        usable = [bool(finite[k:].all()) for k in range(len(inp.slots))]
        full = {k: [(i % n, p) for i, p in pdfs[k]] for k in slots}
        return _Scores(values, usable), full

    def _slot_pdf(self, inp: DecisionInput, k: int, allowed: Sequence[int], full: list,
                  head: list[str]) -> list:
        """VW's pdf for slot k over ``allowed``, given its pdf over all the
        slot may show: that one itself, SquareCB's rule applied to it
        (:mod:`bandit.squarecb`), or, for other explorers, one more predict;
        for RegCB with its floor mixed in (VW ignores ``--epsilon`` there)."""
        e = self.settings.exploration
        if len(allowed) == len(inp.allowed(k)):
            pdf = full
        elif e.algorithm == "squarecb" and not e.floor:
            pdf = squarecb.over(full, set(allowed))
        else:
            pdf = self._alone(inp, k, allowed, head)[0][k]
        return _with_floor(pdf, e.policy_floor, allowed) if e.policy_floor else pdf

    def _centred(self, inp: DecisionInput, k: int, allowed: Sequence[int], pdf: Sequence,
                 scores: _Scores) -> list[tuple[int, float]]:
        """VW's pdf for slot k with its top collection's probability swapped
        with the joint target's. What earlier slots took is read from
        ``allowed`` (slot k's eligible collections missing from it), so the
        same call inside a decision and on its own gives the same answer."""
        total = _mass(pdf)
        if total is None:
            return _ranked(pdf, inp.slots[k])
        keyed = _by_probability_keyed(pdf, total)
        if scores.usable[k]:
            left = set(allowed)
            taken = [a for a in inp.allowed(k) if a not in left]
            target = best_assignment(inp, scores.values, first=k, taken=taken)[0]
            q_top, top = keyed[0]
            if target != top and target in left:
                q_target = next((q for q, a in keyed if a == target), 0.0)
                if q_target:
                    keyed = [(q_top if a == target else q_target if a == top else q, a) for q, a in keyed]
                else:  # VW gave the target no mass: it takes the top's, the top leaves
                    keyed[0] = (q_top, target)
                keyed.sort()
        return [(a, -q) for q, a in keyed]

    def _decide_joint(self, inp: DecisionInput, event_id: str, head: list[str]) -> Decision:
        """Fill slots in order from the centred distributions (see the module docstring)."""
        scores, full = self._score_matrix(inp, head)
        seeds = slot_seeds(event_id, len(inp.slots))

        def choose(k: int, slot: SlotSpec, allowed: list[int]) -> SlotChoice:
            pdf = self._slot_pdf(inp, k, allowed, full[k], head)
            ranking = self._centred(inp, k, allowed, pdf, scores)
            u = random.Random(int(_event_hash(seeds[k]), 16)).random()
            (action, probability), acc = ranking[-1], 0.0
            for a, p in ranking:
                acc += p
                if u < acc:
                    action, probability = a, p
                    break
            return SlotChoice(slot.id, action, probability, tuple(ranking), ranking[0][0])
        return fill_in_order(inp, choose)

    def decide(self, inp: DecisionInput, event_id: str, mode: Mode = Mode.ONLINE) -> Decision:
        """Fill every slot in order, never the same collection twice."""
        head = head_lines(inp)
        if mode is Mode.APPRENTICE:
            return self._apprentice(inp, head)
        if len(inp.slots) > len(inp.candidates):
            raise NoEligibleCandidate(f"slot '{inp.slots[len(inp.candidates)].id}' has no eligible collection left")
        if self._joint(inp):
            return self._decide_joint(inp, event_id, head)
        seeds = slot_seeds(event_id, len(inp.slots))
        pdfs, _ = self._predict(head, [slot_line(inp, k, seed=seed) for k, seed in enumerate(seeds)])
        masses = [_mass(pdf) if pdf else 0.0 for pdf in pdfs]
        if any(m is None for m in masses):
            return _uniform_decision(inp, event_id)
        decision = Decision()
        for slot, pdf, total in zip(inp.slots, pdfs, masses):
            if not pdf:
                raise NoEligibleCandidate(f"slot '{slot.id}' has no eligible collection left")
            action, mass = pdf[0]  # VW's draw (cb_sample puts it first)
            if not mass > 0:  # drawn with no mass: VW's float fallback at the end of the pdf
                return _uniform_decision(inp, event_id)
            ranking = _by_probability(pdf, total)
            decision.choices.append(SlotChoice(slot.id, action, mass / total, tuple(ranking), ranking[0][0]))
        return decision

    def _apprentice(self, inp: DecisionInput, head: list[str]) -> Decision:
        """Serve the baseline; record what the model would have served."""
        def choose(k: int, slot: SlotSpec, allowed: list[int]) -> SlotChoice:
            action = _baseline(inp, slot, allowed)
            top = self.slot_distribution(inp, k, allowed, head)[0][0]
            return SlotChoice(slot.id, action, 1.0, ((action, 1.0),), top)
        return fill_in_order(inp, choose)

    def scores(self, inp: DecisionInput, k: int, allowed: Sequence[int]) -> dict[int, float]:
        """VW's predicted reward (-cost) of each allowed candidate in slot k."""
        _, partial = self._alone(inp, k, allowed, None, partial=allowed)
        return {a: -p for a, p in zip(allowed, partial)}

    def explain(self, inp: DecisionInput, k: int, allowed: Sequence[int], action: int,
                top: int = 5, max_features: int = 48) -> list[tuple[str, str, float]]:
        """Which features raised or lowered the chosen collection's predicted
        reward: each feature is left out in turn and the score recomputed
        (exact for VW's model, interactions included; bounded in count). An
        action's score does not depend on which others are allowed, so only
        ``action`` is scored: one action per predict, not all of ``allowed``."""
        base = self.scores(inp, k, [action])[action]
        out = []
        for where, name, ablated in itertools.islice(_ablations(inp, k, action), max_features):
            out.append((where, name, base - self.scores(ablated, k, [action])[action]))
        out.sort(key=lambda item: -abs(item[2]))
        return out[:top]

    def learn(self, inp: DecisionInput, choices: Sequence[SlotChoice], rewards: Sequence[float]) -> None:
        """One update from a joined decision, in learning order (see
        :func:`learning_order`); VW minimises cost = -reward."""
        example = learning_order(inp, choices)
        lines = vw_lines(example.inp, example.choices, [-r for r in rewards])
        with self._lock:
            self._ws.learn(lines)

    def save(self, path: Path) -> None:
        with self._lock:
            self._ws.save(str(path))

    def close(self) -> None:
        with self._lock:
            self._ws.finish()


def explainable_features(inp: DecisionInput, k: int, action: int) -> int:
    """How many features :meth:`Policy.explain` could leave out for slot k's ``action``."""
    groups = (*inp.context, *inp.slots[k].groups, *inp.candidates[action].groups)
    return sum(len(g.features) for g in groups)


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
        examples = self._ws._parse(line)  # native calls, as in Policy._predict
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


def _with_floor(pdf: Sequence[tuple[int, float]], floor: float, allowed: Sequence[int]) -> list[tuple[int, float]]:
    """``pdf`` mixed with ``floor`` of the uniform distribution over ``allowed``."""
    total = _mass(pdf)
    if total is None:
        return list(pdf)
    probs = dict(pdf)
    return [(a, (1.0 - floor) * probs.get(a, 0.0) / total + floor / len(allowed)) for a in allowed]


def _mass(pdf: Sequence[tuple[int, float]]) -> float | None:
    """The distribution's total, what VW normalises by; None when the model's
    scores overflowed (features near float32's limits): NaN or no probability
    mass. (A NaN or infinite entry makes the sum non-finite, so the rest of
    the checks see finite numbers only.)"""
    total = math.fsum(map(itemgetter(1), pdf))
    return total if math.isfinite(total) and total > 0 and min(pdf, key=itemgetter(1))[1] >= 0 else None


def _by_probability_keyed(pdf: Sequence[tuple[int, float]], total: float) -> list[tuple[float, int]]:
    """The one ranking rule: the collections with mass, normalised by
    ``total``, as (-probability, index) sorted, i.e. by probability, ties by
    index. The pairs compare natively (no key function: this runs per slot
    of every decision), and negating a float is exact."""
    return sorted([(-(p / total), a) for a, p in pdf if p > 0])


def _by_probability(pdf: Sequence[tuple[int, float]], total: float) -> list[tuple[int, float]]:
    """The collections with mass, normalised by ``total``, by probability, ties by index."""
    return [(a, -q) for q, a in _by_probability_keyed(pdf, total)]


_uniform_fallbacks = itertools.count(1)


def _uniform_decision(inp: DecisionInput, event_id: str) -> Decision:
    """Every slot uniformly over what is left, seeded by the event id: what a
    decision falls back to when the model gives no usable distribution. The
    logged probabilities are the uniform ones it was drawn with."""
    count = next(_uniform_fallbacks)
    if count == 1 or count % 1000 == 0:  # a diverged model must not flood the log
        log.warning("event %s: the model gave no usable distribution (overflow?); placed uniformly "
                    "(%d such decisions so far)", event_id, count)
    rng = random.Random(int(_event_hash(event_id), 16))

    def choose(k: int, slot: SlotSpec, allowed: list[int]) -> SlotChoice:
        p = 1.0 / len(allowed)
        action = allowed[min(int(rng.random() * len(allowed)), len(allowed) - 1)]
        return SlotChoice(slot.id, action, p, tuple((a, p) for a in allowed), allowed[0])
    return fill_in_order(inp, choose)


def _ranked(pdf: Sequence[tuple[int, float]], slot: SlotSpec) -> list[tuple[int, float]]:
    """VW's slot distribution normalised (VW draws after normalising, so these
    are the probabilities it drew with), by probability, ties by index;
    uniform over its collections when the model gave no usable one."""
    if not pdf:
        raise NoEligibleCandidate(f"slot '{slot.id}' has no eligible collection left")
    total = _mass(pdf)
    if total is None:
        return [(a, 1.0 / len(pdf)) for a in sorted(a for a, _ in pdf)]
    return _by_probability(pdf, total)
