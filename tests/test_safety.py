"""Hostile input never poisons the model or loses what was acknowledged
(issue 12): rewards beyond the documented range, timestamps before their
decision or far in the future, bad items inside a join batch."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pytest

from bandit.events import read_lines
from server.client import PlacementClient

from helpers import SEGMENTS, SLOTS
from placement_process import PLACEMENT
from test_loop import drive, register_collections, settle

CODE = grpc.StatusCode
LONG = {"join": {"window_seconds": 3600, "tick_seconds": 0.02}}  # joins only when a test closes them
YEAR_9999 = datetime(9999, 1, 1, tzinfo=timezone.utc).timestamp()


def joined_lines(data: Path) -> dict[str, dict]:
    return {obj["EventId"]: obj for path in sorted((data / "joined" / "default").glob("*.dsjson"))
            for _, obj in read_lines(path)}


def append_event(data: Path, record: dict) -> None:
    """What a server without the door checks had acknowledged and logged."""
    with open(sorted((data / "events").glob("events-*.jsonl"))[-1], "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def others(client: PlacementClient, n: int, prefix: str = "other") -> list[str]:
    """Ordinary callers' decisions, each rewarded on its first slot."""
    ids = []
    for i in range(n):
        result = client.decide({"customer": {"segment": SEGMENTS[i % 3]}}, SLOTS, event_id=f"{prefix}-{i}")
        client.reward(result.event_id, 1.0, slot_id=SLOTS[0])
        ids.append(result.event_id)
    return ids


def assert_not_uniform(client: PlacementClient) -> None:
    for seg in SEGMENTS:
        ranking = client.decide({"customer": {"segment": seg}}, SLOTS).slots[0].ranking
        probabilities = [p for _, p in ranking]
        assert max(probabilities) > 2 * min(probabilities), ranking


# --- reward range --------------------------------------------------------------

@pytest.mark.parametrize("value", [1e39, -1e308, 1e308, 1e6 * (1 + 1e-12), -2e6])
def test_reward_beyond_the_range_is_refused_naming_value_and_range(client, value):
    register_collections(client)
    result = client.decide({"customer": {"segment": "a"}}, SLOTS)
    with pytest.raises(grpc.RpcError) as err:
        client.reward(result.event_id, value, slot_id=SLOTS[0])
    assert err.value.code() == CODE.INVALID_ARGUMENT
    assert repr(value) in err.value.details() and "[-1e+06, 1e+06]" in err.value.details()
    assert client.stats().rewards == 0


def test_hostile_rewards_leave_the_model_usable_and_lose_no_decision(start, tmp_path):
    data = tmp_path / "data"
    server = start(data, **LONG)
    with PlacementClient(server.target) as client:
        register_collections(client)
        victim = client.decide({"customer": {"segment": "a"}}, SLOTS, event_id="victim")
        for value in (1e39, -1e308, 1e308, 1e308):
            with pytest.raises(grpc.RpcError):
                client.reward(victim.event_id, value, slot_id=SLOTS[0])
        client.reward(victim.event_id, 1e6, slot_id=SLOTS[0])  # the range's edge, twice: the sum is clipped
        client.reward(victim.event_id, 1e6, slot_id=SLOTS[0])
        ids = others(client, 20)
        drive(client, 600, seed=12)
        settle(server)
        assert client.stats().pending == 0
        joined = joined_lines(data)
        assert {"victim", *ids} <= set(joined) and len(joined) == 621
        assert joined["victim"]["_outcomes"][0]["_label_cost"] == -1e6
        assert server.engine.learner_errors == 0
        assert_not_uniform(client)
    server.stop()
    again = start(data, **LONG)
    with PlacementClient(again.target) as client:
        assert_not_uniform(client)


def test_an_overflowing_reward_in_an_old_log_is_clipped_on_recovery(start, tmp_path):
    """Rewards acknowledged before the range was checked: two of 1e308 sum to
    inf, one of 1e39 is inf in float32; the join clips, nobody's decision is lost."""
    data = tmp_path / "data"
    server = start(data, **LONG)
    with PlacementClient(server.target) as client:
        register_collections(client)
        for event_id in ("huge", "float32"):
            client.decide({"customer": {"segment": "b"}}, SLOTS, event_id=event_id)
        ids = others(client, 20)
    server.stop()
    for event_id, value in (("huge", 1e308), ("huge", 1e308), ("float32", -1e39)):
        append_event(data, {"kind": "reward", "id": event_id, "slot": SLOTS[1], "value": value, "ts": 1.0})
    again = start(data, **LONG)
    settle(again)
    joined = joined_lines(data)
    assert set(joined) == {"huge", "float32", *ids}
    assert joined["huge"]["_outcomes"][1]["_label_cost"] == -1e6
    assert joined["float32"]["_outcomes"][1]["_label_cost"] == 1e6
    assert again.engine.joiner.stats.failed == 0 and again.engine.learner_errors == 0


def test_placement_import_refuses_rewards_beyond_the_range(tmp_path):
    src = tmp_path / "log.csv"
    src.write_text("collection,prob,revenue\na,0.5,1e39\nb,0.5,-2e6\nc,0.5,999999.5\n")
    out = tmp_path / "out.dsjson"
    proc = subprocess.run([PLACEMENT, "import", str(src), "--out", str(out), "--action", "collection",
                           "--reward", "revenue", "--propensity", "prob"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = " ".join((proc.stdout + proc.stderr).split())
    assert "row 1 (event row-1): reward value 1e+39 is outside the reward range [-1e+06, 1e+06]" in text
    assert "row 2 (event row-2): reward value -2000000.0 is outside" in text
    [(_, joined)] = list(read_lines(out))
    assert joined["EventId"] == "row-3" and joined["_outcomes"][0]["_label_cost"] == -999999.5


# --- timestamps ------------------------------------------------------------------

def test_reward_and_activation_times_are_checked_at_the_door(start, tmp_path):
    data = tmp_path / "data"
    server = start(data, **LONG)
    with PlacementClient(server.target) as client:
        register_collections(client)
        before = others(client, 50, "before")
        mail = client.decide({"customer": {"segment": "c"}}, SLOTS, event_id="mail", deferred=True)
        after = others(client, 50, "after")
        cases = [
            (lambda: client.activate(mail.event_id, at=0.0), "before its decision"),
            (lambda: client.activate(mail.event_id, at=YEAR_9999), "in the future"),
            (lambda: client.reward(mail.event_id, 1.0, slot_id=SLOTS[0], at=0.0), "before its decision"),
            (lambda: client.reward(mail.event_id, 1.0, slot_id=SLOTS[0], at=YEAR_9999), "in the future"),
        ]
        for call, message in cases:
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == CODE.INVALID_ARGUMENT, err.value.details()
            assert message in err.value.details() and "mail" in err.value.details()
        client.activate(mail.event_id)
        client.reward(mail.event_id, 1.0, slot_id=SLOTS[0])
        settle(server)
        stats = client.stats()
        assert stats.pending == 0 and stats.joined == 101 and stats.joined_with_reward == 101
    assert set(joined_lines(data)) == {"mail", *before, *after}


def test_an_early_activation_in_an_old_log_loses_no_decision(start, tmp_path):
    """An activation at or before its decision (``at = 0``), acknowledged before
    the door checked it, among ~100 ordinary decisions closing in the same
    join step: after a restart every one of them is joined."""
    data = tmp_path / "data"
    server = start(data, **LONG)
    with PlacementClient(server.target) as client:
        register_collections(client)
        before = others(client, 50, "before")
        client.decide({"customer": {"segment": "c"}}, SLOTS, event_id="mail", deferred=True)
        after = others(client, 50, "after")
    server.stop()
    append_event(data, {"kind": "activate", "id": "mail", "ts": 0.0})
    again = start(data, **LONG)
    settle(again)
    with PlacementClient(again.target) as client:
        assert client.stats().pending == 0
    assert set(joined_lines(data)) == {"mail", *before, *after}
    assert again.engine.joiner.stats.failed == 0
