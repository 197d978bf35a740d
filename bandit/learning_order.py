"""The order a decision is learned in: slot k's chosen collection listed k-th.

One home for this rule, because both learning encodings obey it: the text
examples :meth:`bandit.policy.Policy.learn` feeds VW, and the joined DSJSON
line the server's learner and plain ``vw --dsjson`` read. The served order is
kept beside it (``_served`` in the joined line) for offline evaluation.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple, Sequence

from bandit.decision import DecisionInput, SlotChoice


class LearningExample(NamedTuple):
    """A decision renumbered into learning order; ``served[i]`` is the served
    index of learning candidate i."""

    inp: DecisionInput
    choices: tuple[SlotChoice, ...]
    served: tuple[int, ...]


def learning_order(inp: DecisionInput, choices: Sequence[SlotChoice]) -> LearningExample:
    """The decision with slot k's chosen collection listed k-th, the rest after
    in served order; indices, rankings and include lists renumbered.

    Why: VW 9.11.9's SquareCB means to learn without importance weights but
    keeps the 1/p weight of the action listed last in each slot's example
    (tests/test_vw_squarecb.py), so one explored click at p = 0.003 on the last
    collection outweighs a converged model. ccb gives slot k the actions no
    earlier slot took, in this shared order, so slot k's chosen is first among
    them and last only when it was the slot's sole option (p = 1): SquareCB
    then learns exactly as with p = 1. The other explorers learn the same
    weights in any order (their 1/p weighting is kept; cover differs only in
    how its argmin breaks ties)."""
    served = tuple(dict.fromkeys([*(c.action for c in choices), *range(len(inp.candidates))]))
    position = {a: i for i, a in enumerate(served)}

    def renumber(c: SlotChoice) -> SlotChoice:
        return replace(c, action=position[c.action], ranking=tuple((position[a], p) for a, p in c.ranking),
                       model_top=position.get(c.model_top, -1))

    eligible = tuple(None if e is None else tuple(sorted(position[a] for a in e)) for e in inp.eligible)
    reordered = DecisionInput(inp.context, inp.slots, tuple(inp.candidates[a] for a in served), eligible)
    return LearningExample(reordered, tuple(map(renumber, choices)), served)


def served_order(example: LearningExample) -> tuple[DecisionInput, tuple[SlotChoice, ...]]:
    """The decision as served, from its learning order (the inverse of
    :func:`learning_order` for rankings by probability, ties by index, as
    decisions rank them)."""
    inp, served = example.inp, example.served
    candidates = [None] * len(served)
    for i, a in enumerate(served):
        candidates[a] = inp.candidates[i]

    def renumber(c: SlotChoice) -> SlotChoice:
        ranking = sorted(((served[a], p) for a, p in c.ranking), key=lambda ap: (-ap[1], ap[0]))
        return replace(c, action=served[c.action], ranking=tuple(ranking),
                       model_top=served[c.model_top] if 0 <= c.model_top < len(served) else -1)

    eligible = tuple(None if e is None else tuple(sorted(served[a] for a in e)) for e in inp.eligible)
    return DecisionInput(inp.context, inp.slots, tuple(candidates), eligible), tuple(map(renumber, example.choices))
