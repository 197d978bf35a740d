"""The engine without the wire: decide logs before it returns, settle joins,
learns and publishes, stats is one snapshot of it all."""

from __future__ import annotations

import random

from bandit.catalog import Collection
from bandit.decision import Mode
from server.engine import DecideCall, Engine
from server.eventlog import read_log_dir

from conftest import make_config
from helpers import SEGMENTS, SLOTS, candidates, click_probability, decision_input


def _call(event_id: str, seg: str) -> DecideCall:
    inp = decision_input(seg)
    collections = tuple(Collection(c.id, c.groups) for c in candidates())
    return DecideCall(event_id, "", inp.context, inp.slots, collections, Mode.ONLINE, False, None)


def test_decide_is_logged_before_it_returns_and_settle_learns_it(tmp_path):
    engine = Engine(make_config(tmp_path / "data", join={"window_seconds": 3600}))
    engine.start()
    try:
        rng = random.Random(3)
        for i in range(300):
            seg = rng.choice(SEGMENTS)
            event = engine.decide(_call(f"e{i}", seg))
            logged = {r["id"] for r in read_log_dir(tmp_path / "data" / "events") if r.get("kind") == "decision"}
            assert event.event_id in logged  # durable before the caller hears of it
            for choice in event.choices:
                if rng.random() < click_probability(seg, choice.slot_id, event.inp.candidates[choice.action].id):
                    engine.reward(event.event_id, choice.slot_id, 1.0)
        before = engine.stats()
        assert before.decisions == 300 and before.pending == 300 and before.joined == 0
        assert engine.settle() == 300
        after = engine.stats()
        assert after.pending == 0 and after.joined == 300 and after.rewards == before.rewards > 0
        surface = after.surfaces[0]
        assert surface.examples_learned == 300 and int(surface.model_version) > 1
    finally:
        engine.drain()


def test_a_repeated_event_id_returns_the_original_decision(tmp_path):
    engine = Engine(make_config(tmp_path / "data"))
    engine.start()
    try:
        first = engine.decide(_call("same", "a"))
        again = engine.decide(_call("same", "b"))  # other context, same id: the original answer
        assert [c.action for c in again.choices] == [c.action for c in first.choices]
        assert engine.stats().decisions == 1
        assert len(first.choices) == len(SLOTS)
    finally:
        engine.drain()
