"""The slot walk, the one rule every logged propensity rests on: slot k may
show what it is eligible for, minus what the slots before it took. Every
policy, the replay and the importer go through it, so these tests guard all
of them; the property test checks the policies that fill slots themselves."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.assignment import best_assignment
from bandit.decision import DecisionInput, NoEligibleCandidate, SlotChoice, fill_in_order
from bandit.features import Candidate, SlotSpec


def _input(n: int, eligible: tuple) -> DecisionInput:
    return DecisionInput((), tuple(SlotSpec(f"s{k}") for k in range(len(eligible))),
                         tuple(Candidate(f"c{i}") for i in range(n)), eligible)


def test_available_is_eligible_minus_taken():
    inp = _input(5, (None, (1, 2, 3), (0,)))
    assert inp.available(0, set()) == [0, 1, 2, 3, 4]
    assert inp.available(1, {2}) == [1, 3]
    assert inp.available(2, {0}) == []
    assert list(inp.walk([4, 1, 0])) == [(0, [0, 1, 2, 3, 4]), (1, [1, 2, 3]), (2, [0])]


def test_fill_in_order_refuses_a_slot_with_nothing_left():
    inp = _input(3, (None, (0,)))
    first = lambda k, slot, allowed: SlotChoice(slot.id, allowed[0], 1.0, ((allowed[0], 1.0),))  # noqa: E731
    with pytest.raises(NoEligibleCandidate, match="slot 's1'"):
        fill_in_order(inp, first)


eligibility = st.integers(2, 7).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.one_of(st.none(), st.sets(st.integers(0, n - 1), min_size=1).map(
        lambda s: tuple(sorted(s)))), min_size=1, max_size=n)))


@settings(max_examples=200, deadline=None)
@given(eligibility, st.integers(0, 2**32 - 1))
def test_every_filler_honours_the_walk(case, seed):
    """Any policy built on fill_in_order (uniform, greedy, rule, apprentice,
    the uniform fallback) shows each slot only what the walk leaves it."""
    n, eligible = case
    inp = _input(n, tuple(eligible))
    rng = np.random.default_rng(seed)

    taken: list[int] = []

    def random_choice(k, slot, allowed):
        a = int(rng.choice(allowed))
        taken.append(a)
        return SlotChoice(slot.id, a, 1.0 / len(allowed), tuple((x, 1.0 / len(allowed)) for x in allowed))
    try:
        decision = fill_in_order(inp, random_choice)
    except NoEligibleCandidate:  # only when the earlier slots really took all that slot may show
        assert inp.available(len(taken), taken) == []
        return
    actions = [c.action for c in decision.choices]
    assert len(set(actions)) == len(actions)
    for (k, allowed), choice in zip(inp.walk(actions), decision.choices):
        assert choice.action in allowed and choice.action in inp.allowed(k)


def test_best_assignment_respects_eligibility_and_earlier_slots():
    inp = _input(4, (None, (1, 2), None))
    value = np.array([[0.1, 0.9, 0.0, 0.2],   # slot 0 wants 1 ...
                      [0.0, 0.8, 0.5, 0.9],   # ... slot 1 may only show 1 or 2 (3 is not eligible)
                      [0.3, 0.0, 0.0, 0.1]])
    assert best_assignment(inp, value) == [1, 2, 0]  # 1.7; [1, 3, 0] (2.1) would put 3 where it may not go
    assert best_assignment(_input(4, (None, None, None)), value) == [1, 3, 0]
    assert best_assignment(inp, value, first=1, taken=[1]) == [2, 0]  # slot 0 fixed at 1
