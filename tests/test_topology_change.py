"""Changing the topology loses nothing (issue 11): a real `placement serve`
SIGKILLed under load and restarted on the same data directory with another
worker count; every acknowledged decision is joined exactly once with every
acknowledged reward, rewards sent after the restart join, and a Decide retried
after the crash gets its original decision (it is never logged twice)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from functools import partial

import grpc
import pytest

from server.client import PlacementClient, collection

from helpers import joined_items, logged_decisions
from placement_process import SLOTS, churn_context, config_toml, kill_under_load, serve, stop

CONFIG = config_toml(15.0, 40, 0.3)



def _traffic(target: str, seed: int, halt: threading.Event, acked: dict) -> None:
    """Decisions, and a reward for the first slot of every other one, until the server dies."""
    with PlacementClient(target, timeout=5) as client:
        n = 0
        while not halt.is_set():
            event_id = f"w{seed}-{n}"
            try:
                result = client.decide(churn_context(n), SLOTS, event_id=event_id)
                acked["decisions"][event_id] = [(s.slot_id, s.collection_id) for s in result.slots]
                if n % 2:
                    client.reward(event_id, 1.0, slot_id="homepage")
                    acked["rewards"].add((event_id, "homepage"))
            except grpc.RpcError:
                return  # the server was killed under us
            n += 1


def _load_then_kill(target: str, proc: subprocess.Popen, seconds: float) -> dict:
    acked: dict = {"decisions": {}, "rewards": set()}
    kill_under_load(proc, [partial(_traffic, target, s, acked=acked) for s in range(3)], seconds)
    return acked


def _wait_joined(client: PlacementClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.stats().pending:
        assert time.monotonic() < deadline, client.stats()
        time.sleep(0.2)


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2), (2, 3)])
def test_worker_count_change_after_sigkill_loses_nothing(tmp_path, before, after):
    data, config = tmp_path / "data", tmp_path / "c.toml"
    config.write_text(CONFIG)
    proc, target = serve(data, config, before)
    with PlacementClient(target) as admin:
        admin.put_collections([collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(4)])
    time.sleep(0.5)  # workers pick up catalog changes within REFRESH_SECONDS
    acked = _load_then_kill(target, proc, 2.5)
    assert len(acked["decisions"]) > 100

    proc, target = serve(data, config, after)
    try:
        with PlacementClient(target, timeout=10) as client:
            answered = 0
            for eid in sorted(acked["decisions"])[::5]:  # the client retries: same id, same request
                try:
                    result = client.decide(churn_context(int(eid.split("-")[1])), SLOTS, event_id=eid)
                except grpc.RpcError as err:  # joined already (a slow restart outlived its window)
                    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, (eid, err.details())
                    continue
                assert [(s.slot_id, s.collection_id) for s in result.slots] == acked["decisions"][eid], eid
                answered += 1
            assert answered > 0, "no retry reached a pending decision"
            late = 0
            for eid in sorted(acked["decisions"]):  # rewards after the restart
                try:
                    client.reward(eid, 2.0, slot_id="email")
                except grpc.RpcError as err:  # past its window is fine; unknown is not
                    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, (eid, err.details())
                    continue
                acked["rewards"].add((eid, "email"))
                late += 1
            assert late > 0
            _wait_joined(client)
    finally:
        code = stop(proc)
    assert code == 0

    logged = Counter(e["id"] for e in logged_decisions(data))
    assert set(acked["decisions"]) <= set(logged)
    assert [eid for eid, n in logged.items() if n > 1] == [], "a retried decision was logged again"
    joined = {}
    for item in joined_items(data):
        assert item.decision.event_id not in joined, f"{item.decision.event_id} joined twice"
        joined[item.decision.event_id] = item
    missing = set(acked["decisions"]) - set(joined)
    assert not missing, f"{len(missing)} of {len(acked['decisions'])} acknowledged decisions never joined"
    for eid, slot in acked["rewards"]:
        item = joined[eid]
        k = [c.slot_id for c in item.decision.choices].index(slot)
        assert item.observed[k], (eid, slot)
