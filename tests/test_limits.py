"""Bounds that keep one kind of request from exhausting the server: the
memory of pending decisions has a ceiling (RESOURCE_EXHAUSTED beyond it), and
explain=true computes a bounded number of feature ablations. Both topologies."""

from __future__ import annotations

import time

import grpc
import pytest

from server.client import PlacementClient, collection, decide_request

from helpers import settle

WINDOW = {"window_seconds": 3600, "tick_seconds": 0.02}


def _until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_pending_decisions_have_a_ceiling_with_a_clear_refusal(start_topology):
    server = start_topology(join=WINDOW, limits={"max_pending_decisions": 5})
    with PlacementClient(server.target) as client:
        client.put_collections([collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(3)])
        time.sleep(0.5)  # workers pick up the catalog within their refresh period
        first = [client.decide({"u": {"s": "a"}}, ["homepage"], event_id=f"p-{i}") for i in range(5)]
        _until(lambda: client.stats().pending == 5)
        time.sleep(0.5)  # workers read the coordinator's pending count every refresh
        with pytest.raises(grpc.RpcError) as refused:
            client.decide({"u": {"s": "a"}}, ["homepage"], event_id="p-over")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "5 decisions are waiting for their reward window, at most 5 (limits.max_pending_decisions)" \
            in refused.value.details()
        repeat = client.decide({"u": {"s": "a"}}, ["homepage"], event_id="p-0")  # a repeat takes no memory
        assert repeat.chosen() == first[0].chosen()
        stats = client.stats()
        assert stats.pending_refused == 1 and stats.pending == 5 and stats.decisions == 5
        settle(server)  # joins make room again
        _until(lambda: client.stats().pending == 0)
        time.sleep(0.5)
        client.decide({"u": {"s": "a"}}, ["homepage"], event_id="p-after")


def _wide(n: int) -> dict:
    return {f"f{j}": float(j) / n for j in range(n)}


@pytest.mark.parametrize("max_concurrent", [2, 0])
def test_explain_computes_a_bounded_number_of_feature_ablations(start_topology, max_concurrent):
    server = start_topology(limits={"explain_max_features": 10, "explain_max_concurrent": max_concurrent})
    candidates = [collection(f"c{i}", {"c": _wide(40)}) for i in range(50)]
    slots = ["homepage", "email", "detail"]
    with PlacementClient(server.target) as client:
        wide = client.service.Decide(_request({"u": _wide(60)}, slots, candidates, "wide"), timeout=30)
        narrow = client.service.Decide(_request({"u": {"s": "a"}}, slots,
                                                [collection(f"n{i}", {"c": {"x": 1.0}}) for i in range(3)],
                                                "narrow"), timeout=30)
        stats = client.stats()
    assert wide.explanation_truncated  # 3 slots x 101 features wanted, 10 computed
    if max_concurrent:
        assert stats.explain_ablations == 10 + 6  # and the narrow one's 2 features x 3 slots, all of them
        assert not narrow.explanation_truncated
        assert [len(s.explanation) for s in narrow.slots] == [2, 2, 2]
        assert all(s.explanation for s in wide.slots[:2])
    else:  # explanations switched off: answered, flagged, nothing computed
        assert stats.explain_ablations == 0 and narrow.explanation_truncated
        assert all(not s.explanation for s in [*wide.slots, *narrow.slots])
    assert stats.explains_truncated == (1 if max_concurrent else 2)
    assert all(len(r.slots) == 3 for r in (wide, narrow))


def _request(context, slots, candidates, event_id):
    request = decide_request(context, slots, candidates, event_id=event_id)
    request.explain = True
    return request
