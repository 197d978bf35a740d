"""SquareCB's distribution over part of a slot's collections, derived from
VW's over all of them (bandit.squarecb), against VW's own predict over that
part: in plain pyvw (so a VW upgrade that changes the rule is noticed) and on
the policy's ccb path, where the joint fill uses it instead of one more
predict per slot."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest
from vowpalwabbit import pyvw

from bandit import squarecb
from bandit.policy import Policy, _ranked, head_lines
from bandit.vwargs import Exploration, LearningSettings

from helpers import SEGMENTS, click_probability, decision_input

N = 8
RATES = tuple(0.05 + 0.05 * i for i in range(N))
# float32 in VW, float64 here: the two computations of one real number
TOLERANCE = 1e-5


def _lines(user: str, actions, chosen: int | None = None, cost: float = 0.0, p: float = 1.0) -> list[str]:
    return [f"shared |s user={user}",
            *(f"{f'0:{cost}:{p} ' if a == chosen else ''}|a id=c{a} x:{a / N}" for a in actions)]


def _pdf(vw: pyvw.Workspace, user: str, actions) -> dict[int, float]:
    return {actions[i]: p for i, p in enumerate(vw.predict(_lines(user, actions)))}


@pytest.fixture(scope="module", params=[(10.0, 0.5), (300.0, 0.5), (30.0, 0.0)])
def cb_model(request) -> pyvw.Workspace:
    """A plain ``--cb_explore_adf --squarecb`` policy that has learned for a
    while (distributions far from uniform, several collections with mass)."""
    scale, exponent = request.param
    vw = pyvw.Workspace(f"--cb_explore_adf --squarecb --gamma_scale {scale} --gamma_exponent {exponent} --quiet")
    rng, actions = random.Random(0), list(range(N))
    for _ in range(1500):
        user = rng.choice("ab")
        pdf = _pdf(vw, user, actions)
        a = rng.choices(actions, weights=[pdf[i] for i in actions])[0]
        rate = RATES[a] if user == "a" else RATES[N - 1 - a]
        vw.learn(_lines(user, actions, a, -float(rng.random() < rate), pdf[a]))
    return vw


def test_vw_squarecb_over_a_subset_follows_from_its_distribution_over_all(cb_model):
    rng = random.Random(1)
    compared = 0
    for user in "ab":
        full = _pdf(cb_model, user, list(range(N)))
        assert max(full.values()) < 0.999 and sorted(full.values())[-2] > 1e-4  # not degenerate
        for size in range(1, N):
            for subset in rng.sample(list(itertools.combinations(range(N), size)), 6):
                vw = _pdf(cb_model, user, list(subset))
                ours = dict(squarecb.over(list(full.items()), set(subset)))
                assert ours.keys() == vw.keys()
                assert max(abs(ours[a] - vw[a]) for a in vw) < TOLERANCE, (
                    "VW's SquareCB no longer gives 1 / (n + gamma (cost - best)) to what it is offered: "
                    "bandit.squarecb (the joint fill's later slots) must change with it")
                compared += 1
    assert compared == 2 * 6 * (N - 1)


def test_an_unusable_distribution_stays_unusable():
    nan = float("nan")
    assert all(p != p for _, p in squarecb.over([(0, nan), (1, 0.5), (2, 0.5)], {1, 2}))
    assert all(p != p for _, p in squarecb.over([(0, 0.0), (1, 0.0)], {1}))
    assert squarecb.over([(0, 0.7), (1, 0.3)], set()) == []


def _trained(settings: LearningSettings, decisions: int = 1500) -> Policy:
    """The serving ccb path, joint fill, trained on the planted test world."""
    policy = Policy(replace(settings, fill="joint"))
    rng = random.Random(3)
    for t in range(decisions):
        seg = rng.choice(SEGMENTS)
        inp = decision_input(seg, rng)
        choices = policy.decide(inp, f"train-{t}").choices
        policy.learn(inp, choices, [float(rng.random() < click_probability(seg, c.slot_id, inp.candidates[c.action].id))
                                    for c in choices])
    return policy


@pytest.fixture(scope="module")
def joint_policy() -> Policy:
    return _trained(LearningSettings())


def _requests(n: int, seed: int):
    rng = random.Random(seed)
    for i in range(n):
        inp = decision_input(rng.choice(SEGMENTS), rng)
        yield (replace(inp, eligible=(None, (0, 1, 2), None)) if i % 3 == 0 else inp), rng


def test_one_predict_over_copies_scores_every_slot_as_one_predict_per_slot(joint_policy):
    """The joint fill's score matrix (each slot offered its own copy of the
    candidates) equals predicting each slot alone at its position, exactly."""
    for inp, _ in _requests(30, seed=5):
        for first in range(len(inp.slots)):
            scores, full = joint_policy._score_matrix(inp, head_lines(inp), first)
            for k in range(first, len(inp.slots)):
                allowed = list(inp.allowed(k))
                pdfs, costs = joint_policy._alone(inp, k, allowed, None, partial=allowed)
                assert [scores.values[k, a] for a in allowed] == [-c for c in costs]
                assert dict(full[k]) == dict(pdfs[k])


def test_later_slots_distribution_equals_vws_predict_over_what_is_left(joint_policy):
    """What the joint fill serves a later slot without predicting it again is
    VW's own distribution over what the earlier slots left it."""
    compared = 0
    for inp, rng in _requests(40, seed=6):
        scores, full = joint_policy._score_matrix(inp, head_lines(inp))
        for k in range(1, len(inp.slots)):
            everything = list(inp.allowed(k))
            left = sorted(rng.sample(everything, rng.randint(1, len(everything) - 1)))
            derived = dict(_ranked(joint_policy._slot_pdf(inp, k, left, full[k], head_lines(inp)), inp.slots[k]))
            vw = dict(_ranked(joint_policy._alone(inp, k, left, None)[0][k], inp.slots[k]))
            assert derived.keys() == vw.keys()
            assert max(abs(derived[a] - vw[a]) for a in vw) < TOLERANCE
            compared += 1
    assert compared == 80


@pytest.mark.parametrize("exploration", [Exploration(algorithm="epsilon"), Exploration(floor=0.05)])
def test_explorers_the_rule_does_not_cover_predict_again(exploration):
    """Epsilon-greedy, or SquareCB with a floor, is not SquareCB's rule: the
    later slots' distributions come from a predict over what is left (the
    rule would give them other numbers: checked, so the test can fail)."""
    policy = _trained(LearningSettings(exploration=exploration), decisions=300)
    inp = decision_input("a")
    scores, full = policy._score_matrix(inp, head_lines(inp))
    left = [0, 2, 3]
    vw = dict(policy._alone(inp, 1, left, None)[0][1])
    assert dict(policy._slot_pdf(inp, 1, left, full[1], head_lines(inp))) == vw
    rule = dict(squarecb.over(full[1], set(left)))
    assert max(abs(rule[a] - vw[a]) for a in vw) > 1e-3
