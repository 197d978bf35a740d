"""One encoding: text (serving) and DSJSON (log, plain VW) learn identical weights."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace

import pytest

from bandit.logformat.events import (DecisionEvent, JoinedEvent, dumps, event_from_record, event_line, event_to_record,
                           joined_from_dsjson, joined_to_dsjson)
from bandit.features import FeatureError, FeatureGroup, Limits, check_groups, float32, namespaces, vw_text
from bandit.policy import LogLearner, Policy
from bandit.vwargs import LearningSettings, SettingsError, vw_arguments

from helpers import SEGMENTS, click_probability, decision_input


def _joined_events(n: int, seed: int) -> list[JoinedEvent]:
    policy = Policy(LearningSettings().with_exploration(algorithm="epsilon", epsilon=0.3))
    rng = random.Random(seed)
    events = []
    for t in range(n):
        seg = rng.choice(SEGMENTS)
        inp = decision_input(seg, rng)
        choices = tuple(policy.decide(inp, f"e{seed}-{t}").choices)
        rewards = tuple(float(rng.random() < click_probability(seg, c.slot_id, inp.candidates[c.action].id))
                        for c in choices)
        decision = DecisionEvent(f"e{seed}-{t}", 1.7e9 + t, "default", "online", "1", inp, choices)
        events.append(JoinedEvent(decision, rewards, (True,) * len(rewards), tuple((r,) for r in rewards)))
    return events


def test_text_and_dsjson_learn_the_same_model(tmp_path):
    settings = LearningSettings()
    events = _joined_events(300, seed=1)
    text_policy = Policy(settings)
    log_learner = LogLearner(settings)  # what the server's online learner uses
    for joined in events:
        d = joined.decision
        text_policy.learn(d.inp, d.choices, joined.rewards)
        log_learner.learn_line(json.dumps(joined_to_dsjson(joined)))
    log_learner.save(tmp_path / "dsjson.vw")
    from_log = Policy(settings, model_path=tmp_path / "dsjson.vw")
    for seg in SEGMENTS:
        inp = decision_input(seg)
        everything = range(len(inp.candidates))
        a = [text_policy.slot_distribution(inp, k, everything) for k in range(len(inp.slots))]
        b = [from_log.slot_distribution(inp, k, everything) for k in range(len(inp.slots))]
        assert [[x for x, _ in slot] for slot in a] == [[x for x, _ in slot] for slot in b]
        for sa, sb in zip(a, b):
            for (_, pa), (_, pb) in zip(sa, sb):
                assert pa == pytest.approx(pb, abs=1e-6)


def test_event_line_is_the_record_and_reads_back():
    """The decide path's line (candidate parts cached per object) is exactly the
    event record, for fresh and for reused candidate objects alike."""
    events = [j.decision for j in _joined_events(4, seed=3)]
    reused = replace(events[1], inp=replace(events[1].inp, candidates=events[0].inp.candidates))
    for event in [*events, reused, events[0]]:
        line = event_line(event)
        assert json.loads(line) == json.loads(dumps(event_to_record(event)))
        assert event_from_record(json.loads(line)) == event


def _as_vw_sees(groups):
    """The groups with numbers rounded to float32, as the joined log holds them."""
    return tuple(FeatureGroup(g.name, {n: v if isinstance(v, str) else float32(v) for n, v in g.features.items()})
                 for g in groups)


def test_joined_dsjson_round_trip():
    joined = _joined_events(5, seed=2)[-1]
    back = joined_from_dsjson(json.loads(json.dumps(joined_to_dsjson(joined))))
    assert back.decision.inp.context == _as_vw_sees(joined.decision.inp.context)
    assert back.decision.inp.candidates == tuple(replace(c, groups=_as_vw_sees(c.groups))
                                                 for c in joined.decision.inp.candidates)
    assert [s.id for s in back.decision.inp.slots] == [s.id for s in joined.decision.inp.slots]
    assert [(c.slot_id, c.action) for c in back.decision.choices] == \
        [(c.slot_id, c.action) for c in joined.decision.choices]
    for c1, c2 in zip(back.decision.choices, joined.decision.choices):
        assert c1.probability == pytest.approx(c2.probability)
        assert dict(c1.ranking) == pytest.approx(dict(c2.ranking))
    assert back.rewards == joined.rewards


def test_categories_with_separators_are_one_feature():
    text = vw_text(namespaces("C", (FeatureGroup("page", {"title": "Back to School: big|deals"}),)))
    assert text == "|C.page title=Back_to_School__big_deals"


@pytest.mark.parametrize("groups, message", [
    ((FeatureGroup("u", {"x": math.nan}),), "not finite"),
    ((FeatureGroup("u", {"x": math.inf}),), "not finite"),
    ((FeatureGroup("bad name", {"x": 1.0}),), "may only contain"),
    ((FeatureGroup("u", {"x|y": 1.0}),), "may only contain"),
    ((FeatureGroup("u", {"x": 1.0}), FeatureGroup("u", {"y": 1.0})), "appears twice"),
    ((FeatureGroup("u", {f"f{i}": 1.0 for i in range(5)}),), "at most 4"),
    ((FeatureGroup("u", {"x": "y" * 20}),), "longer than 10"),
    ((FeatureGroup("u", {"_label": "x"}),), "group 'u' feature name '_label' may only contain .* start with"),
    ((FeatureGroup("_u", {"x": 1.0}),), "group name '_u' may only contain"),
    ((FeatureGroup("u", {"x\n": 1.0}),), r"feature name 'x\\n' may only contain"),
    ((FeatureGroup("u", {"x": "a\x00b"}),), "'u.x': category holds U\\+0000 at position 1"),
    ((FeatureGroup("u", {"x": "tab\there"}),), "U\\+0009 at position 3"),
    ((FeatureGroup("u", {"x": "\x85"}),), "U\\+0085"),
    ((FeatureGroup("u", {"x": "\ud800"}),), "U\\+D800"),
])
def test_bad_features_are_refused(groups, message):
    with pytest.raises(FeatureError, match=message):
        check_groups(groups, "context", Limits(max_features_per_group=4, max_category_length=10))


def test_every_explorer_builds_a_working_workspace():
    for algorithm in ("epsilon", "softmax", "bag", "cover", "squarecb", "rnd", "first"):
        policy = Policy(LearningSettings().with_exploration(algorithm=algorithm))
        decision = policy.decide(decision_input("a"), "same-id")
        assert len({c.action for c in decision.choices}) == 3
        for choice in decision.choices:
            assert sum(p for _, p in choice.ranking) == pytest.approx(1.0)
            assert dict(choice.ranking)[choice.action] == pytest.approx(choice.probability)


@pytest.mark.parametrize("changes, message", [
    ({"algorithm": "thompson"}, "not one of"),
    ({"epsilon": 1.5}, "epsilon"),
    ({"bag_size": 0}, "bag_size"),
])
def test_invalid_exploration_settings(changes, message):
    with pytest.raises(SettingsError, match=message):
        LearningSettings().with_exploration(**changes).validate()


def test_settings_from_config_reject_unknown_keys():
    with pytest.raises(SettingsError, match="unknown exploration"):
        LearningSettings.from_dict({"exploration": {"algorithm": "epsilon", "epsilonn": 0.1}})
    settings = LearningSettings.from_dict({"exploration": {"algorithm": "softmax", "lambda": 3},
                                           "interactions": ["CA"]})
    assert "--softmax --lambda 3" in vw_arguments(settings)
    assert "--interactions CA" in vw_arguments(settings)


def test_same_event_id_same_draw():
    policy = Policy(LearningSettings().with_exploration(algorithm="epsilon", epsilon=1.0))
    first = policy.decide(decision_input("a"), "event-42")
    again = policy.decide(decision_input("a"), "event-42")
    assert [c.action for c in first.choices] == [c.action for c in again.choices]
    draws = {tuple(c.action for c in policy.decide(decision_input("a"), f"e{i}").choices) for i in range(30)}
    assert len(draws) > 5  # different ids explore different placements
