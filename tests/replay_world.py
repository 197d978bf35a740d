"""A small synthetic joined log with exactly computable target values.

Contexts: segment a/b/c (informative) and an uninformative ``noise`` group.
Four collections, two slots; slot k's click probability depends only on
(segment, slot, collection), so a target's value is an exact finite sum.
The logging policy is a known non-uniform softmax-like preference.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from bandit.logformat.events import DecisionEvent, JoinedEvent, dumps, joined_to_dsjson
from bandit.features import Candidate, FeatureGroup, SlotSpec
from bandit.decision import DecisionInput, SlotChoice

SEGMENTS = ("a", "b", "c")
NOISE = ("x", "y", "z")
COLLECTIONS = ("c0", "c1", "c2", "c3")
SLOTS = ("top", "side")
_BEST = {("a", "top"): 0, ("a", "side"): 1, ("b", "top"): 2, ("b", "side"): 3, ("c", "top"): 3, ("c", "side"): 0}

# Target: pi_k(a | segment, available) -- a dict of probabilities.
SlotPolicy = Callable[[str, int, Sequence[int]], dict[int, float]]


def click_probability(seg: str, k: int, a: int) -> float:
    return 0.7 if _BEST[(seg, SLOTS[k])] == a else 0.1 + 0.05 * a


def logging_policy(seg: str, k: int, avail: Sequence[int]) -> dict[int, float]:
    """Prefers collection (segment index + k) mod 4 (weight 4), then the next (2)."""
    s = SEGMENTS.index(seg)
    weight = {a: 1.0 for a in avail}
    for a in avail:
        if a == (s + k) % 4:
            weight[a] = 4.0
        elif a == (s + k + 1) % 4:
            weight[a] = 2.0
    total = sum(weight.values())
    return {a: w / total for a, w in weight.items()}


def uniform_policy(seg: str, k: int, avail: Sequence[int]) -> dict[int, float]:
    return {a: 1.0 / len(avail) for a in avail}


def fixed_target(seg: str, k: int, avail: Sequence[int]) -> dict[int, float]:
    """A good fixed target: 0.7 on the best available collection, the rest spread."""
    best = _BEST[(seg, SLOTS[k])]
    top = best if best in avail else avail[0]
    rest = [a for a in avail if a != top]
    return {top: 0.7, **{a: 0.3 / len(rest) for a in rest}}


def candidates() -> tuple[Candidate, ...]:
    return tuple(Candidate(cid, (FeatureGroup("kind", {"k": "even" if i % 2 == 0 else "odd"}),))
                 for i, cid in enumerate(COLLECTIONS))


def decision_input(seg: str, noise: str) -> DecisionInput:
    return DecisionInput((FeatureGroup("customer", {"segment": seg}), FeatureGroup("noise", {"n": noise})),
                         (SlotSpec("top", default_collection="c1"), SlotSpec("side")), candidates())


def make_events(n: int, seed: int, logger: SlotPolicy = logging_policy,
                n_slots: int = 2) -> list[JoinedEvent]:
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        seg, noise = SEGMENTS[rng.integers(3)], NOISE[rng.integers(3)]
        inp = decision_input(seg, noise)
        inp = DecisionInput(inp.context, inp.slots[:n_slots], inp.candidates)
        used: list[int] = []
        choices, rewards = [], []
        for k in range(n_slots):
            avail = inp.available(k, used)
            probs = logger(seg, k, avail)
            acts = list(probs)
            a = int(acts[rng.choice(len(acts), p=[probs[x] for x in acts])])
            ranking = tuple(sorted(((x, float(probs[x])) for x in acts), key=lambda ap: -ap[1]))
            choices.append(SlotChoice(SLOTS[k], a, float(probs[a]), ranking))
            rewards.append(float(rng.random() < click_probability(seg, k, a)))
            used.append(a)
        decision = DecisionEvent(f"e{i:05d}", 1.7e9 + i, "default", "online", "1", inp, tuple(choices))
        events.append(JoinedEvent(decision, tuple(rewards), (True,) * n_slots, tuple((r,) for r in rewards)))
    return events


def write_log(path: Path, events: Sequence[JoinedEvent]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for e in events:
            fh.write(dumps(joined_to_dsjson(e)) + "\n")
    return path


def write_probs(path: Path, events: Sequence[JoinedEvent], target: SlotPolicy) -> Path:
    """External probabilities of ``target`` given the logged earlier slots."""
    with open(path, "w", encoding="utf-8") as fh:
        for e in events:
            seg = e.decision.inp.context[0].features["segment"]
            choices = e.decision.choices
            for (k, avail), choice in zip(e.decision.inp.walk([c.action for c in choices]), choices):
                probs = {COLLECTIONS[a]: p for a, p in target(str(seg), k, avail).items()}
                fh.write(json.dumps({"event_id": e.decision.event_id, "slot_id": choice.slot_id,
                                     "probabilities": probs}) + "\n")
    return path


def conditional_value(target: SlotPolicy, n_slots: int = 2) -> float:
    """What the per-slot (page = sum of slots) estimators estimate: slot k from
    the target, earlier slots as the logger chose them."""
    total = 0.0
    for seg in SEGMENTS:
        for k in range(n_slots):
            for prefix in itertools.permutations(range(len(COLLECTIONS)), k):
                p_prefix = 1.0
                for j, a in enumerate(prefix):
                    p_prefix *= logging_policy(seg, j, [b for b in range(len(COLLECTIONS)) if b not in prefix[:j]])[a]
                avail = [a for a in range(len(COLLECTIONS)) if a not in prefix]
                value = sum(p * click_probability(seg, k, a) for a, p in target(seg, k, avail).items())
                total += p_prefix * value / len(SEGMENTS)
    return total


def joint_value(target: SlotPolicy, n_slots: int = 2) -> float:
    """The target's true page value (its own earlier choices): what SIPS estimates."""
    total = 0.0
    for seg in SEGMENTS:
        for slate in itertools.product(range(len(COLLECTIONS)), repeat=n_slots):
            if len(set(slate)) < n_slots:
                continue
            p = 1.0
            for k in range(n_slots):
                avail = [a for a in range(len(COLLECTIONS)) if a not in slate[:k]]
                p *= target(seg, k, avail).get(slate[k], 0.0)
            total += p * sum(click_probability(seg, k, slate[k]) for k in range(n_slots)) / len(SEGMENTS)
    return total
