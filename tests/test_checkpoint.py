"""Restart is bounded by what is pending, not by history (issue 11): recovery
starts from DATA/checkpoint.json and reads only the logs' tails after it; a
torn or missing checkpoint makes it read everything, with the same result."""

from __future__ import annotations

import json

import pytest

from bandit.catalog import Collection
from bandit.features import SlotSpec, groups_from_dict
from server.engine import AlreadyJoined, CallerGone, DecideCall, Engine
from server.eventlog import read_log_dir

from conftest import make_config

HISTORY = 300
WINDOW = {"join": {"window_seconds": 60.0, "tick_seconds": 0.02}}


def _call(n: int) -> DecideCall:
    return DecideCall(f"e{n}", "", groups_from_dict({"u": {"seg": "abc"[n % 3]}}),
                      (SlotSpec("homepage"), SlotSpec("email")),
                      tuple(Collection(f"c{i}", groups_from_dict({"c": {"x": float(i)}})) for i in range(4)),
                      None, False, None)


def _history(data) -> None:
    """HISTORY decisions with rewards, joined and learned; a clean stop (checkpoint)."""
    engine = Engine(make_config(data, **WINDOW))
    engine.start()
    for n in range(HISTORY):
        engine.decide(_call(n))
        engine.reward(f"e{n}", "homepage", 1.0)
    engine.settle()
    engine.stop()


def _crash_with_pending(data) -> list[str]:
    """A few new decisions (one rewarded), then the process dies: no stop, no checkpoint."""
    engine = Engine(make_config(data, **WINDOW))
    ids = [engine.decide(_call(HISTORY + n)).event_id for n in range(5)]
    engine.reward(ids[0], "email", 2.0)
    engine.events.close()  # written, as a killed process's acknowledged lines are
    return ids


def test_recovery_from_a_checkpoint_reads_only_the_tail(tmp_path):
    data = tmp_path / "data"
    _history(data)
    assert json.loads((data / "checkpoint.json").read_text())["joiner"]["ids"] == []
    pending = _crash_with_pending(data)

    engine = Engine(make_config(data, **WINDOW))
    assert engine.recovered_lines == 6  # the 5 decisions and 1 reward after the checkpoint, not the history
    assert engine.pending() == 5
    assert engine.reward(pending[1], "homepage", 1.0) == "homepage"  # recovered pending decisions take rewards
    assert engine.decide(_call(HISTORY + 2)).choices == engine.joiner.get(pending[2]).choices  # idempotent
    with pytest.raises(AlreadyJoined):  # joined before the checkpoint: the id is still known
        engine.decide(_call(7))
    engine.start()
    assert engine.settle() == 5
    engine.stop()
    assert engine.surfaces["default"].examples_learned == HISTORY + 5


def test_a_checkpoint_keeps_pending_decisions_and_their_rewards(tmp_path):
    """A checkpoint written while decisions are pending holds them (by where
    their lines are) with their rewards; the restart reads nothing before it."""
    data = tmp_path / "data"
    engine = Engine(make_config(data, **WINDOW))
    for n in range(20):
        engine.decide(_call(n))
    engine.reward("e3", "email", 5.0)
    engine.checkpoint()
    engine.events.close()  # then the process dies

    again = Engine(make_config(data, **WINDOW))
    assert again.recovered_lines == 0 and again.pending() == 20
    joined = {j.decision.event_id: j for j in again.joiner.close_due(again.clock() + 120)}
    assert set(joined) == {f"e{n}" for n in range(20)}
    assert joined["e3"].rewards == (0.0, 5.0) and joined["e3"].observed == (False, True)
    assert joined["e4"].decision.choices == engine.joiner.get("e4").choices


def test_torn_or_missing_checkpoint_falls_back_to_reading_everything(tmp_path):
    data = tmp_path / "data"
    _history(data)
    pending = _crash_with_pending(data)
    path = data / "checkpoint.json"
    text = path.read_text()
    for broken in (text[: len(text) // 2], "", json.dumps({"format": 99}), None):
        if broken is None:
            path.unlink()
        else:
            path.write_text(broken)
        engine = Engine(make_config(data, **WINDOW))
        assert engine.recovered_lines >= 2 * HISTORY + HISTORY  # every event line and every joined line
        assert engine.pending() == 5
        assert engine.joiner.is_closed("e0") and engine.joiner.get(pending[0]) is not None
        engine.events.close()
        for jlog in engine.joined_logs.values():
            jlog.close()


@pytest.mark.parametrize("checkpointed", [True, False])
def test_an_unserved_decision_stays_dropped_after_a_restart(tmp_path, checkpointed):
    """A decision whose caller was gone once it was logged is marked unserved
    and dropped; a restart, from a checkpoint or (after a crash) from the logs,
    must not bring it back as pending (it would be learned as shown, not
    clicked), and a retry with its id is decided afresh."""
    data = tmp_path / "data"
    engine = Engine(make_config(data, **WINDOW))
    served = engine.decide(_call(1)).event_id
    with pytest.raises(CallerGone):
        engine.decide(_call(2), wanted=lambda: False)
    if checkpointed:
        engine.checkpoint()
    engine.events.close()  # then the process dies

    engine = Engine(make_config(data, **WINDOW))
    assert engine.pending() == 1 and engine.joiner.get(served) is not None
    assert engine.joiner.get("e2") is None and not engine.joiner.is_closed("e2")
    assert engine.decide(_call(2)).event_id == "e2"  # decided afresh, not ALREADY_EXISTS
    assert engine.pending() == 2


def test_decisions_joined_after_the_checkpoint_are_not_joined_again(tmp_path):
    """The process dies after a join step wrote its lines to the joined log
    and before the next checkpoint: the checkpoint still holds those decisions
    as pending. The restart reads the joined log's tail after the checkpoint
    (to relearn it); what it finds there is joined, so it must leave pending
    too, or it joins (and is learned) twice."""
    data = tmp_path / "data"
    engine = Engine(make_config(data, **WINDOW))
    ids = [engine.decide(_call(n)).event_id for n in range(20)]
    engine.reward(ids[0], "email", 2.0)
    engine.checkpoint()  # all 20 pending
    assert engine.join_now(now=engine.clock() + 120) == 20  # written to the joined log; no checkpoint yet
    engine.events.close()  # then the process dies
    engine.joined_logs["default"].close()

    again = Engine(make_config(data, **WINDOW))
    assert again.pending() == 0
    assert all(again.joiner.is_closed(i) for i in ids)
    with pytest.raises(AlreadyJoined):
        again.decide(_call(3))
    again.start()
    assert again.settle() == 0
    again.stop()
    joined = [obj["EventId"] for obj in read_log_dir(data / "joined" / "default", "joined", "dsjson")]
    assert sorted(joined) == sorted(ids)  # each once
    assert again.surfaces["default"].examples_learned == 20


def test_a_restart_finishes_a_publish_a_crash_cut_before_its_pointer_moved(tmp_path):
    """The newest version's file and metadata are written, CURRENT still names
    the one before (the crash came between): the restart serves the newest,
    learns on from where it left off, and model info calls it current."""
    data = tmp_path / "data"
    _history(data)
    models = data / "models" / "default"
    newest = int((models / "CURRENT").read_text())
    (models / "CURRENT").write_text(str(newest - 1))

    engine = Engine(make_config(data, **WINDOW))
    surface = engine.surfaces["default"]
    serving, versions = surface.model_info()
    assert serving.version == str(newest) == str(versions[-1].version)
    assert surface.examples_learned == surface.joined_through == HISTORY
    engine.events.close()
    for jlog in engine.joined_logs.values():
        jlog.close()
