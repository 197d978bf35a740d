"""Feature names VW's DSJSON parser reads as its own fields (``_label``,
``_multi``, ...) are refused at the door; before, they were accepted and the
learner segfaulted when such a decision joined, and again on every restart.

A real `placement serve` runs as a subprocess, so a crash is seen as one."""

from __future__ import annotations

import subprocess
import time

import grpc
import pytest

from server.client import PlacementClient, collection

from placement_process import serve, stop

CONFIG = """
[join]
window_seconds = 2.0  # joins on its own, yet a reward sent after a slow Decide on a busy machine is in it
tick_seconds = 0.05
[learner]
publish_every_examples = 1
publish_every_seconds = 0.2
"""
SPECIAL = ["_label", "_multi", "_slots", "_text", "_labelIndex", "_tag", "_a", "_p", "_x", "_label_cost"]
CANDIDATES = 400


def _decide_and_reward(client: PlacementClient, event_id: str, context: dict) -> grpc.StatusCode:
    """The Decide's status; an answered decision gets a reward on its first slot."""
    try:
        result = client.decide(context, ["homepage", "email"], event_id=event_id)
    except grpc.RpcError as exc:
        return exc.code()
    client.reward(result.event_id, 1.0, slot_id=result.slots[0].slot_id)
    return grpc.StatusCode.OK


def _wait_joined(proc: subprocess.Popen, target: str, joined: int, timeout: float = 60) -> int:
    """Poll until ``joined`` decisions are learned or the server died; examples learned."""
    deadline = time.monotonic() + timeout
    with PlacementClient(target) as client:
        while proc.poll() is None and time.monotonic() < deadline:
            stats = client.stats()
            learned = sum(s.examples_learned for s in stats.surfaces)
            if stats.joined >= joined and learned >= joined:
                return learned
            time.sleep(0.1)
    return -1


@pytest.mark.parametrize("workers", [1, 2])
def test_names_vw_reads_as_its_own_fields_are_refused_and_crash_nothing(tmp_path, workers):
    data, config = tmp_path / "data", tmp_path / "c.toml"
    config.write_text(CONFIG)
    proc, target = serve(data, config, workers)
    try:
        with PlacementClient(target) as client:
            client.put_collections([collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(CANDIDATES)])
            time.sleep(0.5)  # workers pick up catalog changes within REFRESH_SECONDS
            codes = {name: _decide_and_reward(client, f"bad-{name}", {"u": {name: "x", "seg": "a"}})
                     for name in SPECIAL}
            codes["numeric _labelIndex"] = _decide_and_reward(client, "bad-num", {"u": {"_labelIndex": 399.0}})
            assert _decide_and_reward(client, "good", {"u": {"seg": "a"}}) == grpc.StatusCode.OK
            accepted = sum(code == grpc.StatusCode.OK for code in codes.values())
        learned = _wait_joined(proc, target, 1 + accepted)
        assert proc.poll() is None, f"the server died (exit {proc.returncode}) when the decisions joined"
        assert learned == 1 + accepted
        assert codes == {name: grpc.StatusCode.INVALID_ARGUMENT for name in codes}
        with PlacementClient(target) as client:
            with pytest.raises(grpc.RpcError) as refused:
                client.decide({"u": {"_label": "x"}}, ["homepage"], event_id="named")
            assert "group 'u' feature name '_label'" in refused.value.details()
    finally:
        exit_code = stop(proc)
    assert exit_code == 0
    proc, target = serve(data, config, workers)  # recovery relearns nothing that crashes
    try:
        with PlacementClient(target) as client:
            assert client.decide({"u": {"seg": "b"}}, ["homepage"], event_id="after").slots
            assert sum(s.examples_learned for s in client.stats().surfaces) >= learned
        assert proc.poll() is None
    finally:
        exit_code = stop(proc)
    assert exit_code == 0
