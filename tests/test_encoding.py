"""One encoding: text (serving) and DSJSON (log, plain VW) learn identical weights."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from bandit.decision import SlotChoice
from bandit.learning_order import learning_order, served_order
from bandit.features import FeatureError, FeatureGroup, Limits, check_groups, float32, namespaces, vw_text
from bandit.logformat.events import (DecisionEvent, JoinedEvent, LogFormatError, dumps, event_from_record,
                                     event_line, event_to_record, joined_from_dsjson, joined_to_dsjson)
from bandit.policy import LogLearner, Policy
from bandit.vwargs import CB_TYPES, EXPLORERS, Exploration, LearningSettings, SettingsError, vw_arguments
from server.modelstore import sha256_of, verify_vw_model
from vowpalwabbit import pyvw

from helpers import SEGMENTS, assert_same_model, click_probability, decision_input, plain_vw


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


def test_plain_vw_on_the_joined_log_learns_the_servers_model(tmp_path):
    """``python -m vowpalwabbit --dsjson`` on the joined lines (in learning
    order) gives the weights of Policy.learn (which the server's LogLearner
    matches, above): what an analyst retrains offline is what served."""
    settings = LearningSettings()
    events = _joined_events(300, seed=4)
    log = tmp_path / "joined.dsjson"
    log.write_text("".join(dumps(joined_to_dsjson(j)) + "\n" for j in events))
    plain_vw(settings, [log], tmp_path / "plain.vw")
    policy = Policy(settings)
    for joined in events:
        policy.learn(joined.decision.inp, joined.decision.choices, joined.rewards)
    assert_same_model(policy, Policy(settings, model_path=tmp_path / "plain.vw"))


def test_plain_vw_on_a_subsampled_joined_log_learns_the_servers_model(tmp_path):
    """Lines kept by subsampling carry VW's ``pdrop``: the server's learner
    (LogLearner, VW's DSJSON parser) and plain VW on the file both weight them
    by 1 / (1 - pdrop) under --ccb_explore_adf, so they learn the same model,
    and not the model of the same lines without pdrop (the weight reaches
    learning)."""
    settings = LearningSettings()
    events = [replace(j, pdrop=0.75) for j in _joined_events(200, seed=6)]
    log = tmp_path / "joined.dsjson"
    log.write_text("".join(dumps(joined_to_dsjson(j)) + "\n" for j in events))
    assert all(json.loads(line)["pdrop"] == 0.75 for line in log.read_text().splitlines())
    plain_vw(settings, [log], tmp_path / "plain.vw")
    server, unweighted = LogLearner(settings), LogLearner(settings)
    for joined in events:
        server.learn_line(dumps(joined_to_dsjson(joined)))
        unweighted.learn_line(dumps(joined_to_dsjson(replace(joined, pdrop=0.0))))
    server.save(tmp_path / "server.vw")
    unweighted.save(tmp_path / "unweighted.vw")
    assert_same_model(Policy(settings, model_path=tmp_path / "server.vw"),
                      Policy(settings, model_path=tmp_path / "plain.vw"))
    with pytest.raises(AssertionError):
        assert_same_model(Policy(settings, model_path=tmp_path / "server.vw"),
                          Policy(settings, model_path=tmp_path / "unweighted.vw"))
    assert joined_from_dsjson(json.loads(log.read_text().splitlines()[0])).pdrop == 0.75


def _eligible_event(seed: int) -> JoinedEvent:
    """A joined decision with include lists, its choices anywhere in the list."""
    joined = _joined_events(3, seed=seed)[-1]
    d = joined.decision
    n = len(d.inp.candidates)
    eligible = (None, tuple(a for a in range(n) if a != d.choices[0].action), None)
    return replace(joined, decision=replace(d, inp=replace(d.inp, eligible=eligible)))


def test_learning_order_lists_each_slots_choice_in_its_position_and_inverts():
    for seed in range(6):
        joined = _eligible_event(seed)
        inp, choices = joined.decision.inp, joined.decision.choices
        example = learning_order(inp, choices)
        assert [c.action for c in example.choices] == list(range(len(choices)))
        for before, after in zip(choices, example.choices):
            assert example.inp.candidates[after.action] == inp.candidates[before.action]
            assert {example.inp.candidates[a].id: p for a, p in after.ranking} == \
                {inp.candidates[a].id: p for a, p in before.ranking}
        for k, e in enumerate(inp.eligible):
            if e is not None:
                assert sorted(example.inp.candidates[a].id for a in example.inp.eligible[k]) == \
                    sorted(inp.candidates[a].id for a in e)
        assert served_order(example) == (inp, tuple(choices))


def test_joined_log_is_in_learning_order_and_reads_back_as_served():
    for seed in range(6):
        joined = _eligible_event(seed)
        line = json.loads(json.dumps(joined_to_dsjson(joined)))
        assert [o["_a"][0] for o in line["_outcomes"]] == [0, 1, 2]
        ids = [next(iter(m["A"])) for m in line["c"]["_multi"]]
        assert ids == [f"id={joined.decision.inp.candidates[c.action].id}" for c in joined.decision.choices] + \
            [f"id={c.id}" for i, c in enumerate(joined.decision.inp.candidates)
             if i not in {c.action for c in joined.decision.choices}]
        back = joined_from_dsjson(line)
        served = joined.decision.inp
        as_logged = replace(served, context=_as_vw_sees(served.context),
                            candidates=tuple(replace(c, groups=_as_vw_sees(c.groups)) for c in served.candidates))
        assert back.decision.inp == as_logged
        assert [(c.action, c.ranking) for c in back.decision.choices] == \
            [(c.action, c.ranking) for c in joined.decision.choices]


def test_a_bad_served_order_is_a_format_error():
    line = joined_to_dsjson(_eligible_event(1))
    line["_served"] = [0, 0, 1, 2, 3]
    with pytest.raises(LogFormatError, match="not a permutation"):
        joined_from_dsjson(line)


@pytest.mark.parametrize("algorithm", ["squarecb", "regcb"])
@pytest.mark.parametrize("action", range(5))
def test_no_weight_explorers_learn_every_collection_without_importance_weight(algorithm, action):
    """Issue 14: VW's SquareCB (and RegCB, same loop) kept the 1/p weight of
    the collection listed last, so one explored click at p = 0.003 on the last
    collection flipped a converged slot. In learning order a click learns
    exactly as with p = 1, whichever collection got it: the same scores and
    the same distribution."""
    settings = LearningSettings().with_exploration(algorithm=algorithm)
    inp = decision_input("a")
    others = [a for a in range(len(inp.candidates)) if a != action][:2]
    chosen = [action, *others]

    def after(p: float) -> list:
        policy = Policy(settings)
        for joined in _joined_events(400, seed=7):
            policy.learn(joined.decision.inp, joined.decision.choices, joined.rewards)
        choices = [SlotChoice(s.id, a, p if k == 0 else 1.0, ((a, p if k == 0 else 1.0),))
                   for k, (s, a) in enumerate(zip(inp.slots, chosen))]
        policy.learn(inp, choices, [1.0, 0.0, 0.0])
        every = range(len(inp.candidates))
        return [policy.scores(inp, 0, every), policy.slot_distribution(inp, 0, every)]

    assert after(0.003) == after(1.0)


@pytest.mark.parametrize("algorithm", EXPLORERS)
@pytest.mark.parametrize("cb_type", CB_TYPES)
def test_settings_vw_would_reject_are_refused_at_configuration(algorithm, cb_type):
    """validate() refuses exactly the combinations VW refuses to build."""
    exploration = Exploration(algorithm=algorithm)
    try:
        pyvw.Workspace(f"--ccb_explore_adf {' '.join(exploration.arguments())} --cb_type {cb_type} --quiet")
        vw_accepts = True
    except RuntimeError:
        vw_accepts = False
    settings = LearningSettings(exploration=exploration, cb_type=cb_type)
    if vw_accepts:
        settings.validate()
    else:
        with pytest.raises(SettingsError, match=f"cb_type '{cb_type}' does not work with the '{algorithm}'"):
            settings.validate()


def test_event_line_is_the_record_and_reads_back():
    """The decide path's line (candidate parts cached per object) is exactly the
    event record, for fresh and for reused candidate objects alike."""
    events = [j.decision for j in _joined_events(4, seed=3)]
    reused = replace(events[1], inp=replace(events[1].inp, candidates=events[0].inp.candidates))
    for event in [*events, reused, events[0]]:
        line = event_line(event)
        assert json.loads(line) == json.loads(dumps(event_to_record(event)))
        assert event_from_record(json.loads(line)) == event


# JSON-like values as records hold them: any text (lone surrogates too, as a
# surrogateescape'd line gives), ints beyond 64 bits, finite floats of every size.
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                     st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF)), st.just("null"))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                       max_leaves=20)


@given(_values)
@settings(max_examples=300, deadline=None)
def test_dumps_writes_the_values_json_writes(value):
    """The log's encoder (orjson, json.dumps where orjson differs) writes
    exactly the JSON values json.dumps writes: one compact line."""
    line = dumps(value)
    assert "\n" not in line and json.loads(line) == json.loads(json.dumps(value))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_dumps_refuses_nan_and_infinities_wherever_they_are(bad):
    """orjson alone would write them as null: a line that reads back as
    something else. With other nulls in the record, and without."""
    for record in ({"p": bad}, {"rank": [[0, 0.5], [1, bad]]}, {"eligible": [None], "p": [bad]}):
        with pytest.raises(ValueError):
            dumps(record)
    event = _joined_events(1, seed=4)[0].decision
    choice = replace(event.choices[0], ranking=((event.choices[0].action, bad),))
    with pytest.raises(ValueError):
        event_line(replace(event, choices=(choice, *event.choices[1:])))


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


@pytest.mark.parametrize("algorithm", EXPLORERS)
def test_every_explorers_model_passes_the_model_import_allow_list(tmp_path, algorithm):
    """A model trained with any explorer the settings offer carries only options
    the model store lets a model file bring (else its own export would not
    import again)."""
    settings = LearningSettings(bits=12).with_exploration(algorithm=algorithm)
    ws = pyvw.Workspace(vw_arguments(settings))
    for i in range(20):
        ws.learn([f"ccb shared |C u=a{i}", "ccb action |A x", "ccb action |A y", f"ccb slot {i % 2}:-1:0.5 |S s"])
    path = tmp_path / "model.vw"
    ws.save(str(path))
    ws.finish()
    verify_vw_model(path, sha256_of(path), vw_arguments(settings))


def test_regcb_cost_range_is_the_reward_range_negated():
    """VW minimises cost = -reward, so RegCB's cost bounds are the configured
    reward range turned over; an empty range is refused by name."""
    settings = LearningSettings.from_dict({"exploration": {"algorithm": "regcb", "reward_low": -1, "reward_high": 5}})
    args = vw_arguments(settings).split()
    assert args[args.index("--cb_min_cost") + 1] == "-5" and args[args.index("--cb_max_cost") + 1] == "1"
    default = vw_arguments(LearningSettings().with_exploration(algorithm="regcb")).split()
    assert default[default.index("--cb_max_cost") + 1] == "0"
    with pytest.raises(SettingsError, match="reward_low 1 must be below reward_high 1"):
        LearningSettings.from_dict({"exploration": {"algorithm": "regcb", "reward_low": 1, "reward_high": 1}})
