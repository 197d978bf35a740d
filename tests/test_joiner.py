"""The reward joiner: windows, aggregation, defaults, deferred activation."""

from __future__ import annotations

import json

import pytest

from bandit.decision import SlotChoice
from bandit.joiner import (REWARD_RANGE, ExpiredEvent, Joiner, JoinError, RewardOutOfRange, UnknownEvent,
                           UnknownSlot)
from bandit.logformat.events import DecisionEvent, LineRef, dumps, event_to_record

from helpers import decision_input


def decision(event_id: str, ts: float, deferred: bool = False, slots: int = 3) -> DecisionEvent:
    inp = decision_input("a")
    inp = type(inp)(inp.context, inp.slots[:slots], inp.candidates)
    choices = tuple(SlotChoice(s.id, k, 0.5, ((k, 0.5),)) for k, s in enumerate(inp.slots))
    return DecisionEvent(event_id, ts, "default", "online", "1", inp, choices, deferred)


@pytest.mark.parametrize("aggregation, expected", [("sum", 6.0), ("earliest", 3.0), ("max", 3.0), ("mean", 2.0)])
def test_aggregations(aggregation, expected):
    j = Joiner(10, aggregation=aggregation)
    j.add_decision(decision("e", 0))
    for ts, value in ((5, 1.0), (1, 3.0), (3, 2.0)):
        j.add_reward("e", "homepage", value, ts)
    [joined] = j.close_due(10)
    assert joined.rewards[0] == expected
    assert joined.observed == (True, False, False)


def test_window_and_default_reward():
    j = Joiner(10, default_reward=-0.5)
    j.add_decision(decision("e1", 0))
    j.add_decision(decision("e2", 5))
    assert j.close_due(9.99) == []
    [first] = j.close_due(10)
    assert first.decision.event_id == "e1"
    assert first.rewards == (-0.5, -0.5, -0.5)
    assert j.stats.default_reward_applied == 3
    with pytest.raises(ExpiredEvent):
        j.add_reward("e1", "homepage", 1.0, 11)
    j.add_reward("e2", "email", 1.0, 11)
    [second] = j.close_due(15)
    assert second.rewards == (-0.5, 1.0, -0.5)
    assert j.stats.joined == 2 and j.stats.joined_with_reward == 1
    assert j.stats.rejected_expired == 1


def test_reward_errors():
    j = Joiner(10)
    j.add_decision(decision("e", 0))
    with pytest.raises(UnknownEvent):
        j.add_reward("nope", "homepage", 1.0, 1)
    with pytest.raises(UnknownSlot, match="name the slot_id"):
        j.add_reward("e", "", 1.0, 1)
    with pytest.raises(UnknownSlot, match="no slot 'banner'"):
        j.add_reward("e", "banner", 1.0, 1)
    with pytest.raises(JoinError, match="already decided"):
        j.add_decision(decision("e", 1))
    single = Joiner(10)
    single.add_decision(decision("s", 0, slots=1))
    single.add_reward("s", "", 2.0, 1)  # one slot: slot id may be omitted
    assert single.close_all()[0].rewards == (2.0,)


def test_deferred_activation():
    j = Joiner(10)
    j.add_decision(decision("sent", 0, deferred=True))
    j.add_decision(decision("never-sent", 0, deferred=True))
    j.activate("sent", 8)  # the window restarts at activation: the email goes out now
    j.add_reward("sent", "email", 1.0, 15)
    assert j.close_due(10) == []  # the unactivated one is dropped, not joined
    assert j.stats.unactivated_dropped == 1
    [joined] = j.close_due(18)
    assert joined.decision.event_id == "sent" and joined.rewards[1] == 1.0
    with pytest.raises(JoinError, match="not decided with deferred"):
        k = Joiner(10)
        k.add_decision(decision("now", 0))
        k.activate("now", 1)


def test_an_unreadable_item_fails_alone_and_is_counted(tmp_path):
    j = Joiner(10)
    j.add_decision(decision("a", 0))
    record = {"id": "broken", "ts": 0, "slots": [{"id": "homepage"}]}
    j.add_logged(record, LineRef(str(tmp_path / "gone.jsonl"), 0, 10))  # its log line cannot be read
    j.add_decision(decision("b", 1))
    assert [e.decision.event_id for e in j.close_due(20)] == ["a", "b"]
    assert j.stats.failed == 1 and j.stats.joined == 2 and len(j) == 0


def test_an_activation_before_its_decision_counts_from_the_decision():
    j = Joiner(10)
    j.add_decision(decision("mail", 100, deferred=True))
    j.add_decision(decision("other", 100))
    j.activate("mail", 0)  # an old log's early activation: never a second heap entry
    assert [e.decision.event_id for e in j.close_due(110)] == ["mail", "other"]
    assert j.stats.failed == 0 and len(j) == 0


def test_aggregates_are_clipped_into_the_reward_range():
    j = Joiner(10)
    j.add_decision(decision("e", 0))
    j.add_reward("e", "homepage", 1e308, 1)
    j.add_reward("e", "homepage", 1e308, 2)  # sum: inf
    j.add_reward("e", "email", -1e39, 1)
    [joined] = j.close_due(10)
    assert joined.rewards[:2] == (REWARD_RANGE[1], REWARD_RANGE[0])
    with pytest.raises(RewardOutOfRange, match="outside the reward range"):
        Joiner(10, default_reward=1e7)


def test_a_capture_is_the_snapshot_of_its_moment_whatever_changes_after(tmp_path):
    """A checkpoint captures under the engine's lock and builds the snapshot
    after releasing it (and writes it later still): rewards, activations and
    closes that come meanwhile must not leak into it (a restart
    replays them from the log after the checkpoint's position: they would
    count twice). The snapshot taken under the lock before shared its reward
    lists with the joiner, so a reward could leak in before it was written."""
    j = Joiner(10)
    j.add_decision(decision("a", 0), line='{"kind":"decision"}')
    j.add_decision(decision("d", 1, deferred=True))
    j.add_reward("a", "homepage", 1.0, 2)
    before = json.loads(json.dumps(j.snapshot()))  # as written then
    captured = j.capture()
    j.add_reward("a", "homepage", 0.5, 3)
    j.add_reward("a", "email", 1.0, 3)
    j.activate("d", 4)
    j.add_decision(decision("b", 2))
    j.close_due(10)
    assert json.loads(json.dumps(j.snapshot_of(captured))) == before
    assert json.loads(json.dumps(j.snapshot())) != before


def _mixed_joiner(tmp_path, n: int = 25) -> Joiner:
    """Pending decisions of every kind a snapshot holds: located lines in two
    logs, a line not written yet, one kept as its event (the simulator), one
    and three slots, rewards on some, deferred ones activated or not."""
    j = Joiner(100, remember_closed=5)
    logs = [tmp_path / "events-000001.jsonl", tmp_path / "worker-1" / "events-000003.jsonl"]
    logs[1].parent.mkdir()
    for i in range(n):
        d = decision(f"e{i:02d}", float(i), deferred=i % 4 == 0, slots=1 + 2 * (i % 2))
        line = dumps(event_to_record(d))
        if i == 3:
            j.add_decision(d)  # kept as its event
        elif i == 5:
            j.add_decision(d, line=line)  # not written yet
        else:
            with open(logs[i % 2], "ab") as fh:
                offset = fh.tell()
                fh.write(line.encode() + b"\n")
            j.add_decision(d, line=line, ref=LineRef(str(logs[i % 2]), offset, len(line.encode())))
        if i % 3 == 0:
            j.add_reward(d.event_id, "homepage", 0.25 * i, i + 1.0)
            j.add_reward(d.event_id, "homepage", 1.0, i + 0.5)
        if i % 8 == 0:
            j.activate(d.event_id, i + 2.0)
    j.add_decision(decision("gone", 0.0))
    j.close_due(100.0)  # "gone" (and e00's first deadline) closed: remembered
    return j


def test_a_snapshot_restores_to_the_same_pending_state_and_joins(tmp_path):
    """The checkpoint's columns (ids, slot sets, times, activation, where each
    line is, sparse rewards and lines) read back to the joiner they came from:
    the same snapshot, the same joins with the same rewards, the same refusals."""
    j = _mixed_joiner(tmp_path)
    written = json.loads(json.dumps(j.snapshot()))
    back = Joiner(100, remember_closed=5)
    back.restore(written)
    assert json.loads(json.dumps(back.snapshot())) == written
    assert len(back) == len(j) and back.is_closed("gone")
    with pytest.raises(ExpiredEvent):
        back.add_reward("gone", "homepage", 1.0, 5.0)
    ours = [(e.decision, e.rewards, e.observed, e.observations) for e in j.close_all()]
    assert [(e.decision, e.rewards, e.observed, e.observations) for e in back.close_all()] == ours
    assert len(ours) == 25 - 7 + 4 and j.stats.failed == back.stats.failed == 0  # 7 deferred, 4 of them activated


def test_a_snapshot_of_the_earlier_form_still_restores(tmp_path):
    """A checkpoint written before the columns (format 1: one object per
    decision, as that version wrote it) is read, so the first restart after an
    upgrade still resumes from it: the same pending state, rewards included."""
    log = tmp_path / "events-000001.jsonl"
    located, kept = decision("r", 1.0), decision("m", 2.0, deferred=True, slots=1)
    data = dumps(event_to_record(located)).encode()
    log.write_bytes(data + b"\n")
    old = {"closed": ["gone"], "pending": [
        {"id": "r", "slots": ["homepage", "email", "detail"], "ts": 1.0, "deferred": False, "activated": True,
         "opened": 1.0, "rewards": [[[3.0, 1.0], [2.0, 0.5]], [], []], "ref": [str(log), 0, len(data)]},
        {"id": "m", "slots": ["homepage"], "ts": 2.0, "deferred": True, "activated": True, "opened": 4.0,
         "rewards": [[]], "line": dumps(event_to_record(kept))}]}
    back = Joiner(100)
    back.restore(json.loads(json.dumps(old)))
    assert len(back) == 2 and back.is_closed("gone") and back.get("r") == located and back.get("m") == kept
    assert back.close_due(100.5) == []
    [r] = back.close_due(101.0)  # opened at 1: its window closes at 101, its line read from the log
    assert r.decision == located and r.rewards == (1.5, 0.0, 0.0) and r.observed == (True, False, False)
    [m] = back.close_due(104.0)  # opened (activated) at 4
    assert m.decision == kept and m.rewards == (0.0,) and m.observed == (False,)


def test_subsampling_keeps_a_seeded_share_with_its_pdrop_and_counts_the_rest():
    closed = {}
    for seed in (0, 1):
        j = Joiner(10, sample_rate=0.3, sample_seed=seed)
        for i in range(2000):
            j.add_decision(decision(f"e{i}", 0))
        kept = j.close_due(10)
        closed[seed] = {k.decision.event_id for k in kept}
        assert len(kept) + j.stats.subsampled == 2000 and j.stats.joined == len(kept)
        assert 0.3 * 2000 - 4 * 20.5 < len(kept) < 0.3 * 2000 + 4 * 20.5  # Binomial(2000, 0.3): sd 20.5
        assert all(k.pdrop == pytest.approx(0.7) for k in kept)
    again = Joiner(10, sample_rate=0.3, sample_seed=0)  # a restart joins the same decisions again
    for i in range(2000):
        again.add_decision(decision(f"e{i}", 0))
    assert {k.decision.event_id for k in again.close_due(10)} == closed[0]
    assert closed[0] != closed[1]


def test_without_subsampling_nothing_is_left_out_and_no_pdrop_is_written():
    j = Joiner(10)
    for i in range(50):
        j.add_decision(decision(f"e{i}", 0))
    kept = j.close_due(10)
    assert len(kept) == 50 and j.stats.subsampled == 0 and all(k.pdrop == 0.0 for k in kept)
    with pytest.raises(ValueError, match="sample rate"):
        Joiner(10, sample_rate=0.0)


def test_close_due_takes_at_most_limit_oldest_first_and_the_rest_stay_due():
    j = Joiner(10)
    for i in range(5):
        j.add_decision(decision(f"e{i}", i))
    assert [k.decision.event_id for k in j.close_due(100, limit=2)] == ["e0", "e1"]
    assert j.has_due(100) and len(j) == 3
    assert [k.decision.event_id for k in j.close_due(100)] == ["e2", "e3", "e4"]
    assert not j.has_due(100)


def test_a_reward_or_activation_after_the_window_is_expired_even_before_the_join():
    j = Joiner(10)
    j.add_decision(decision("e", 0))
    j.add_decision(decision("d", 0, deferred=True))
    assert j.check_reward("e", "homepage", now=10) == 0
    with pytest.raises(ExpiredEvent, match="past its reward window"):
        j.check_reward("e", "homepage", now=10.5)
    with pytest.raises(ExpiredEvent, match="past its activation window"):
        j.check_activation("d", now=10.5)
    assert j.stats.rejected_expired == 1 and "e" in j
