"""The serving decide path against plain pyvw on the same model: kept candidate
examples, VW's seeded draw, slot positions, slots asked for on their own."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from vowpalwabbit import pyvw

from bandit.features import Candidate, FeatureGroup, SlotSpec
from bandit.decision import DecisionInput, NoEligibleCandidate, SlotChoice
from bandit.policy import Policy, slot_line, slot_seeds, vw_lines
from bandit.vwargs import LearningSettings, SettingsError

from helpers import SEGMENTS, click_probability, decision_input

SETTINGS = LearningSettings().with_exploration(algorithm="squarecb")
IN_ORDER = replace(SETTINGS, fill="in_order")  # VW's own ccb walk: its draw is the served one


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model that has learned the planted world (distributions far from uniform)."""
    policy = Policy(SETTINGS)
    rng = random.Random(3)
    for t in range(1500):
        seg = rng.choice(SEGMENTS)
        inp = decision_input(seg, rng)
        choices = policy.decide(inp, f"train-{t}").choices
        rewards = [float(rng.random() < click_probability(seg, c.slot_id, inp.candidates[c.action].id))
                   for c in choices]
        policy.learn(inp, choices, rewards)
    path = tmp_path_factory.mktemp("model") / "model.vw"
    policy.save(path)
    policy.close()
    return path


def _requests(n: int, seed: int):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        inp = decision_input(rng.choice(SEGMENTS), rng)
        if i % 3 == 0:  # some slots restricted: VW include lists
            inp = replace(inp, eligible=(None, (0, 1, 2), None))
        out.append((inp, f"req-{seed}-{i}"))
    return out


def test_decide_equals_plain_pyvw_on_the_same_text(trained):
    """Kept (reused) candidate examples and standalone shared/slot examples give
    exactly what pyvw's own parse-and-predict gives, draw included."""
    policy = Policy(IN_ORDER, model_path=trained)
    reference = pyvw.Workspace(policy.arguments + f" -i {trained}")
    for inp, event_id in _requests(200, seed=1):
        decision = policy.decide(inp, event_id)
        lines = vw_lines(inp)[:-len(inp.slots)]
        lines += [slot_line(inp, k, seed=seed) for k, seed in enumerate(slot_seeds(event_id, len(inp.slots)))]
        pdfs = reference.predict(lines)
        for choice, pdf in zip(decision.choices, pdfs):
            assert choice.action == pdf[0][0]  # the same draw
            total = sum(p for _, p in pdf)
            assert dict(choice.ranking) == pytest.approx({a: p / total for a, p in pdf if p > 0}, abs=1e-12)
            assert choice.probability == dict(choice.ranking)[choice.action]
    assert any(c.action != c.model_top for inp, e in _requests(200, seed=1)
               for c in policy.decide(inp, e).choices)  # exploration happens, so draws were compared


@pytest.mark.parametrize("fill", ["joint", "in_order"])
def test_slot_on_its_own_equals_its_place_in_a_decision(trained, fill):
    """slot_distribution(k, what earlier slots left) is slot k's distribution
    inside a whole decision: same position features, same candidates, and
    with the joint fill the same centring (what replay values the engine by)."""
    policy = Policy(replace(SETTINGS, fill=fill), model_path=trained)
    for inp, event_id in _requests(60, seed=2):
        decision = policy.decide(inp, event_id)
        walk = inp.walk([c.action for c in decision.choices])
        for (k, allowed), choice in zip(walk, decision.choices):
            alone = policy.slot_distribution(inp, k, allowed)
            assert dict(alone) == pytest.approx(dict(choice.ranking), abs=1e-12)


def test_slot_position_is_part_of_the_prediction(trained):
    """The same slot features at position 0 and at position 2 score differently:
    VW learns per-position weights, so serving must predict each slot at its
    own position (the learner sees every slot at its own)."""
    policy = Policy(SETTINGS, model_path=trained)
    inp = decision_input("a")
    same = replace(inp, slots=(inp.slots[2],) * 3)  # slot 'detail_page' everywhere
    everything = list(range(len(inp.candidates)))
    first = dict(policy.slot_distribution(same, 0, everything))
    third = dict(policy.slot_distribution(same, 2, everything))
    assert max(abs(first[a] - third[a]) for a in everything) > 1e-3


def test_more_slots_than_candidates_is_refused():
    policy = Policy(SETTINGS)
    inp = decision_input("a")
    short = replace(inp, candidates=inp.candidates[:2])
    with pytest.raises(NoEligibleCandidate, match="detail_page"):
        policy.decide(short, "e1")
    with pytest.raises(NoEligibleCandidate, match="email"):
        # slot 0 is restricted to the same single collection, so slot 1 has nothing left
        policy.decide(replace(inp, eligible=((0,), (0,), None)), "e3")


def test_overflowing_scores_fall_back_to_uniform_placement(trained):
    """A feature near float64's limit overflows VW's float32 scores (NaN): the
    decision is still valid, placed uniformly over what each slot has left,
    with the uniform probabilities it was drawn with, the same for the same id."""
    policy = Policy(SETTINGS, model_path=trained)
    inp = decision_input("a")
    huge = replace(inp, context=(FeatureGroup("customer", {"segment": "a", "hour": 1e300}),))
    first = policy.decide(huge, "overflow-1")
    assert policy.decide(huge, "overflow-1") == first
    left = len(inp.candidates)
    for choice in first.choices:
        assert choice.probability == pytest.approx(1.0 / left)
        assert choice.action in dict(choice.ranking) and len(choice.ranking) == left
        left -= 1
    assert len({c.action for c in first.choices}) == len(inp.slots)
    assert policy.decide(inp, "normal").choices[0].probability != pytest.approx(1.0 / len(inp.candidates))


def test_an_actions_score_does_not_depend_on_the_others_allowed(trained):
    """What lets explain score the chosen collection alone (one action per
    ablation predict instead of every candidate's)."""
    policy = Policy(SETTINGS, model_path=trained)
    rng = random.Random(4)
    for i in range(30):
        inp = decision_input(rng.choice(SEGMENTS), rng)
        actions = [c.action for c in policy.decide(inp, f"alone-{i}").choices]
        for k, allowed in inp.walk(actions):
            scores = policy.scores(inp, k, allowed)
            assert len(set(scores.values())) > 1  # a model that tells the candidates apart
            for a in allowed:
                assert policy.scores(inp, k, [a])[a] == scores[a]
    policy.close()


def _two_slot_input() -> DecisionInput:
    return DecisionInput((FeatureGroup("user", {"x": "1"}),), (SlotSpec("top"), SlotSpec("detail")),
                         tuple(Candidate(c) for c in ("a", "b", "c")))


# Expected reward per (slot, collection): 'a' is the best in both slots, but by
# far more in 'detail'; the best whole assignment is top=b, detail=a (1.3),
# each slot taking its own best gives top=a, detail=b (0.6).
_TRUTH = {"top": {"a": 0.5, "b": 0.4, "c": 0.1}, "detail": {"a": 0.9, "b": 0.2, "c": 0.1}}


@pytest.mark.parametrize("fill, top_pick", [("joint", "b"), ("in_order", "a")])
def test_joint_fill_leaves_a_later_slot_the_collection_it_needs_most(fill, top_pick):
    """Taught the truth above (uniform logged choices, their expected rewards),
    the joint fill serves 'b' on top and 'a' on detail, the in-order walk 'a'
    on top: the conflict that cost the engine ~45 % of its regret in the
    seasonal world (BENCHMARKS.md, issue 14)."""
    inp = _two_slot_input()
    policy = _taught(replace(SETTINGS, fill=fill), inp)
    tops = [policy.decide(inp, f"e{i}").choices for i in range(50)]
    names = [[inp.candidates[c.model_top].id for c in d] for d in tops]
    assert all(n[0] == top_pick for n in names)
    served = [inp.candidates[d[0].action].id for d in tops]
    assert served.count(top_pick) > 40  # mostly served, some exploration
    if fill == "joint":
        assert all(n[1] == "a" for n, d in zip(names, tops) if d[0].action != 0)


def _taught(settings: LearningSettings, inp: DecisionInput) -> Policy:
    """A policy taught _TRUTH from uniformly logged choices."""
    policy = Policy(settings)
    rng = random.Random(0)
    for t in range(600):
        first = rng.randrange(3)
        second = rng.choice([a for a in range(3) if a != first])
        choices = [SlotChoice("top", first, 1 / 3, ((first, 1 / 3),)),
                   SlotChoice("detail", second, 1 / 2, ((second, 1 / 2),))]
        rewards = [_TRUTH[c.slot_id][inp.candidates[c.action].id] for c in choices]
        policy.learn(inp, choices, rewards)
    return policy


def test_joint_target_given_no_mass_takes_the_tops():
    """A greedy explorer (epsilon 0) gives only each slot's own best mass; the
    joint target 'b' on top then takes the top's probability and 'a' leaves
    the slot's ranking, so 'a' is left for the detail slot: one collection per
    slot, served with probability 1, rankings that sum to 1."""
    inp = _two_slot_input()
    policy = _taught(replace(SETTINGS, exploration=replace(SETTINGS.exploration, algorithm="epsilon",
                                                           epsilon=0.0)), inp)
    for i in range(20):
        top, detail = policy.decide(inp, f"g{i}").choices
        assert (inp.candidates[top.action].id, top.probability, top.ranking) == ("b", 1.0, ((1, 1.0),))
        assert (inp.candidates[detail.action].id, detail.probability) == ("a", 1.0)
        assert sum(p for _, p in detail.ranking) == pytest.approx(1.0)


def _regcb_taught(floor: float) -> tuple[Policy, list]:
    settings = LearningSettings().with_exploration(algorithm="regcb", floor=floor)
    policy, rng = Policy(settings), random.Random(5)
    for t in range(1500):
        seg = rng.choice(SEGMENTS)
        inp = decision_input(seg, rng)
        choices = policy.decide(inp, f"r-{t}").choices
        policy.learn(inp, choices, [float(rng.random() < click_probability(seg, c.slot_id,
                                                                            inp.candidates[c.action].id))
                                    for c in choices])
    return policy, _requests(100, seed=6)


def test_regcb_converges_and_its_floor_keeps_every_collection_in_reach():
    """RegCB-elim stops exploring where no other collection's interval could
    hold the best; its floor (mixed in by the policy, as VW ignores
    ``--epsilon`` with ``--regcb``) keeps floor / n for every collection a slot
    may show, so the log still supports evaluating other policies. The logged
    probability is the drawn collection's in the ranking, rankings sum to 1."""
    bare, requests = _regcb_taught(0.0)
    floored, _ = _regcb_taught(0.02)
    sure = 0
    for inp, event_id in requests:
        for policy, floor in ((bare, 0.0), (floored, 0.02)):
            decision = policy.decide(inp, event_id)
            taken: list[int] = []
            for k, c in enumerate(decision.choices):
                allowed = [a for a in inp.allowed(k) if a not in taken]
                ranked = dict(c.ranking)
                assert sum(ranked.values()) == pytest.approx(1.0)
                assert ranked[c.action] == pytest.approx(c.probability)
                if floor:
                    assert set(ranked) == set(allowed)
                    assert min(ranked.values()) >= floor / len(allowed) - 1e-12
                else:
                    sure += c.probability == 1.0
                taken.append(c.action)
    assert sure > len(requests)  # converged: most slots are certain without a floor
    one_slot = replace(requests[0][0], slots=requests[0][0].slots[:1], eligible=(None,))
    for i in range(20):  # a one-slot surface gets its floor too
        (c,) = floored.decide(one_slot, f"one-{i}").choices
        n = len(one_slot.candidates)
        assert len(c.ranking) == n and min(p for _, p in c.ranking) >= 0.02 / n - 1e-12
        assert dict(c.ranking)[c.action] == pytest.approx(c.probability)


def test_regcb_floor_needs_the_joint_fill():
    with pytest.raises(SettingsError, match="floor with the 'regcb' explorer needs fill = 'joint'"):
        LearningSettings(fill="in_order").with_exploration(algorithm="regcb", floor=0.01).validate()
