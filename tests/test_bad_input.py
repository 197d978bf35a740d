"""Bad input gets a precise status and message; the server keeps answering and
loses nothing it had accepted."""

from __future__ import annotations

import math

import grpc
import pytest

from placement.v1 import placement_pb2 as pb
from server.client import PlacementClient, collection, decide_request, slot


CODE = grpc.StatusCode
CANDS = [collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(3)]


def _raw(client: PlacementClient, request: pb.DecideRequest):
    return client.service.Decide(request, timeout=5)


BAD_DECIDES = [
    ("no slots", decide_request({}, [], CANDS), CODE.INVALID_ARGUMENT, "no slots"),
    ("duplicate collections", decide_request({}, ["a"], [CANDS[0], CANDS[0]]), CODE.INVALID_ARGUMENT,
     "duplicate collection ids"),
    ("duplicate slots", decide_request({}, ["a", "a"], CANDS), CODE.INVALID_ARGUMENT, "duplicate slot ids"),
    ("more slots than candidates", decide_request({}, ["a", "b"], CANDS[:1]), CODE.INVALID_ARGUMENT,
     "only 1 candidates"),
    ("unknown collection", decide_request({}, ["a"], ["not-in-catalog"]), CODE.NOT_FOUND, "not in the catalog"),
    ("nan feature", decide_request({"u": {"x": math.nan}}, ["a"], CANDS), CODE.INVALID_ARGUMENT, "not finite"),
    # c0 with these features was accepted just before: known candidates are keyed by content
    ("nan collection feature", decide_request({}, ["a"], [collection("c0", {"c": {"x": math.nan}}), *CANDS[1:]]),
     CODE.INVALID_ARGUMENT, "collection 'c0' feature 'c.x': value nan is not finite"),
    ("bad collection feature name", decide_request({}, ["a"], [collection("c0", {"c": {"x y": 0.0}}), *CANDS[1:]]),
     CODE.INVALID_ARGUMENT, "may only contain"),
    ("float32 overflow", decide_request({"u": {"x": 1e300}}, ["a"], CANDS), CODE.INVALID_ARGUMENT,
     "beyond VW's float range"),
    ("inf feature", decide_request({"u": {"x": math.inf}}, ["a"], CANDS), CODE.INVALID_ARGUMENT, "not finite"),
    ("long category", decide_request({"u": {"x": "y" * 5000}}, ["a"], CANDS), CODE.INVALID_ARGUMENT,
     "longer than 256"),
    ("too many features", decide_request({"u": {f"f{i}": 1.0 for i in range(300)}}, ["a"], CANDS),
     CODE.INVALID_ARGUMENT, "at most 256"),
    ("bad slot id", decide_request({}, ["home page"], CANDS), CODE.INVALID_ARGUMENT, "may only contain"),
    ("long event id", decide_request({}, ["a"], CANDS, event_id="e" * 500), CODE.INVALID_ARGUMENT,
     "longer than 128"),
    ("too many slots", decide_request({}, [f"s{i}" for i in range(17)], CANDS), CODE.INVALID_ARGUMENT,
     "at most 16"),
    ("unknown surface", decide_request({}, ["a"], CANDS, surface="kiosk"), CODE.NOT_FOUND, "unknown surface"),
    ("unknown mode", pb.DecideRequest(slots=[slot("a")], candidates=CANDS, mode=7), CODE.INVALID_ARGUMENT,
     "unknown mode 7"),
    ("long default_collection", decide_request({}, [slot("a", default_collection="c" * 100_000)], CANDS),
     CODE.INVALID_ARGUMENT, "slot 'a' default_collection name 'cccc"),
    ("bad default_collection", decide_request({}, [slot("a", default_collection="c0\n")], CANDS),
     CODE.INVALID_ARGUMENT, "slot 'a' default_collection name 'c0\\n' may only contain"),
    ("long surface", decide_request({}, ["a"], CANDS, surface="s" * 100_000), CODE.INVALID_ARGUMENT,
     "surface 'ssss"),
    ("feature named like a VW field", decide_request({"u": {"_label": "x"}}, ["a"], CANDS), CODE.INVALID_ARGUMENT,
     "context group 'u' feature name '_label' may only contain"),
    ("NUL in a category", decide_request({"u": {"x": "a\x00b"}}, ["a"], CANDS), CODE.INVALID_ARGUMENT,
     "context feature 'u.x': category holds U+0000 at position 1"),
    ("long candidate title", decide_request({}, ["a"], [pb.Collection(id="c9", title="t" * 1000)]),
     CODE.INVALID_ARGUMENT, "collection 'c9' title"),
    ("feature without value", pb.DecideRequest(slots=[slot("a")], candidates=CANDS,
                                               context=[pb.FeatureGroup(name="u", features=[pb.Feature(name="x")])]),
     CODE.INVALID_ARGUMENT, "has no value"),
]


@pytest.mark.parametrize("name, request_, code, message", BAD_DECIDES, ids=[b[0] for b in BAD_DECIDES])
def test_bad_decide(shared_client, name, request_, code, message):
    client, accepted_id = shared_client, f"accepted-before-{name.replace(' ', '-')}"
    accepted = client.decide({}, ["a"], CANDS, event_id=accepted_id)
    with pytest.raises(grpc.RpcError) as err:
        _raw(client, request_)
    assert err.value.code() == code, err.value.details()
    assert message in err.value.details()
    # The server keeps answering, and what it had accepted is still there.
    assert client.decide({}, ["a"], CANDS, event_id=accepted_id) == accepted
    assert client.reward(accepted_id, 1.0) == "a"


def test_no_eligible_candidates(client):
    with pytest.raises(grpc.RpcError) as err:
        client.decide({}, ["a"])  # empty catalog
    assert err.value.code() == CODE.FAILED_PRECONDITION
    assert "no eligible collection" in err.value.details()
    client.put_collections([collection("email-only", {"c": {"x": 1.0}}, eligible_slots=["email"]),
                            collection("any", {"c": {"x": 2.0}})])
    with pytest.raises(grpc.RpcError) as err:
        client.decide({}, ["homepage", "banner"])  # two slots, one collection allowed in either
    assert err.value.code() == CODE.FAILED_PRECONDITION
    assert "slot 'banner'" in err.value.details()


def test_bad_rewards_and_activations(client):
    result = client.decide({}, ["a", "b"], CANDS)
    cases = [
        (lambda: client.reward("no-such-event", 1.0), CODE.NOT_FOUND, "unknown"),
        (lambda: client.reward(result.event_id, 1.0), CODE.INVALID_ARGUMENT, "name the slot_id"),
        (lambda: client.reward(result.event_id, 1.0, slot_id="zzz"), CODE.INVALID_ARGUMENT, "no slot 'zzz'"),
        (lambda: client.reward(result.event_id, math.nan, slot_id="a"), CODE.INVALID_ARGUMENT, "not finite"),
        (lambda: client.reward("", 1.0), CODE.INVALID_ARGUMENT, "event_id is required"),
        (lambda: client.reward("e" * 10_000, 1.0), CODE.INVALID_ARGUMENT, "longer than 128"),
        (lambda: client.reward(result.event_id, 1.0, slot_id="s" * 10_000), CODE.INVALID_ARGUMENT,
         "slot_id 'ssss"),
        (lambda: client.activate("e" * 10_000), CODE.INVALID_ARGUMENT, "longer than 128"),
        (lambda: client.activate(result.event_id), CODE.FAILED_PRECONDITION, "not decided with deferred"),
        (lambda: client.activate("no-such-event"), CODE.NOT_FOUND, "unknown"),
    ]
    for call, code, message in cases:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == code, (message, err.value.details())
        assert message in err.value.details()
    assert client.reward(result.event_id, 1.0, slot_id="b") == "b"
    stats = client.stats()
    assert stats.rewards == 1 and stats.rewards_rejected_unknown == 1
    assert stats.bad_requests == len(cases)


def test_reward_after_window_is_expired(start_topology):
    server = start_topology(join={"window_seconds": 0.05, "tick_seconds": 0.01})
    with PlacementClient(server.target) as client:
        result = client.decide({}, ["a"], CANDS)
        server.engine.join_now(now=server.engine.clock() + 1)
        with pytest.raises(grpc.RpcError) as err:
            client.reward(result.event_id, 1.0)
        assert err.value.code() == CODE.FAILED_PRECONDITION
        assert "past its reward window" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:  # the same connection: a worker remembers the id
            client.decide({}, ["a"], CANDS, event_id=result.event_id)
        assert err.value.code() == CODE.ALREADY_EXISTS
        assert err.value.details() == f"event '{result.event_id}' was already decided and joined; use a new event id"
        stats = client.stats()
        assert stats.rewards_rejected_expired == 1 and stats.bad_requests == 2


def test_rejected_decides_of_every_serving_process_are_counted(client, server):
    """Each connection may reach another worker; GetStats counts them all."""
    client.put_collections(CANDS)
    for i in range(10):
        with PlacementClient(server.target) as fresh:
            for _, request_, code, _ in BAD_DECIDES[:3]:
                with pytest.raises(grpc.RpcError) as err:
                    _raw(fresh, request_)
                assert err.value.code() == code
            fresh.decide({}, ["a"], event_id=f"good-{i}")
    stats = client.stats()
    assert stats.bad_requests == 30 and stats.decisions == 10


def test_limits_are_configurable(start_topology):
    server = start_topology(limits={"max_candidates": 2, "features": {"max_category_length": 4}})
    with PlacementClient(server.target) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.decide({}, ["a"], CANDS)
        assert "at most 2" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            client.decide({"u": {"x": "abcde"}}, ["a"], CANDS[:2])
        assert "longer than 4" in err.value.details()
        assert client.decide({"u": {"x": "abcd"}}, ["a"], CANDS[:2]).slots


def test_bad_collections_admin(client):
    with pytest.raises(grpc.RpcError) as err:
        client.put_collections([])
    assert err.value.code() == CODE.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        client.put_collections([collection("x", {"c": {"v": math.nan}})])
    assert err.value.code() == CODE.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        client.put_collections([collection("x"), collection("x")])
    assert "duplicate" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.put_collections([collection("x", active_from=10.0, active_until=5.0)])
    assert "active_until" in err.value.details()
    for bad, message in [(collection("x", {"c": {"_multi": 1.0}}), "collection 'x' group 'c' feature name '_multi'"),
                         (collection("x", {"_c": {"v": 1.0}}), "collection 'x' group name '_c'"),
                         (collection("_x", {"c": {"v": 1.0}}), "collection id name '_x'"),
                         (collection("x", {"c": {"v": "a\x00"}}), "category holds U+0000"),
                         (collection("x", eligible_slots=["home\n"]), "eligible slot name 'home\\n'"),
                         (collection("x", title="t" * 1000), "title 'tttt")]:
        with pytest.raises(grpc.RpcError) as err:
            client.put_collections([bad])
        assert err.value.code() == CODE.INVALID_ARGUMENT and message in err.value.details(), err.value.details()
    assert client.list_collections() == []


def test_a_request_beyond_max_message_bytes_is_refused(start):
    server = start(limits={"max_message_bytes": 16 * 1024})
    with PlacementClient(server.target) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.decide({"u": {f"f{i}": "y" * 200 for i in range(200)}}, ["a"], CANDS)
        assert err.value.code() == CODE.RESOURCE_EXHAUSTED
        assert client.decide({}, ["a"], CANDS).slots
