"""Property-based abuse of every RPC: malformed bytes and extreme messages get a
precise status, the server never crashes, never logs half an event, and keeps
serving good traffic interleaved with the bad."""

from __future__ import annotations

import json
import math
import threading

import grpc
from hypothesis import HealthCheck, given, settings, strategies as st

from placement.v1 import placement_pb2 as pb
from server.client import PlacementClient, collection

from helpers import LONG_WINDOW

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS,
           grpc.StatusCode.RESOURCE_EXHAUSTED}
METHODS = [("/placement.v1.PlacementService/" + m, kind) for m, kind in
           (("Decide", "uu"), ("Reward", "uu"), ("Activate", "uu"), ("DecideStream", "ss"))] + \
          [("/placement.v1.PlacementAdmin/" + m, kind) for m, kind in
           (("PutCollections", "uu"), ("ListCollections", "uu"), ("DeleteCollection", "uu"),
            ("GetModelInfo", "uu"), ("RollbackModel", "uu"), ("GetStats", "uu"), ("ExportModel", "us"),
            ("ImportModel", "su"))]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

names = st.one_of(st.sampled_from(["homepage", "email", "c0", "c1", "u", "x", "default"]),
                  st.text(max_size=300))
numbers = st.floats(allow_nan=True, allow_infinity=True)
features = st.lists(st.builds(lambda n, v: pb.Feature(name=n, number=v) if isinstance(v, float)
                              else pb.Feature(name=n, category=v),
                              names, st.one_of(numbers, st.text(max_size=400))), max_size=40)
groups = st.lists(st.builds(lambda n, f: pb.FeatureGroup(name=n, features=f), names, features), max_size=6)
slots = st.lists(st.builds(lambda i, g, d: pb.Slot(id=i, groups=g, default_collection=d), names, groups, names),
                 max_size=20)
collections = st.lists(st.builds(lambda i, g, e: pb.Collection(id=i, groups=g, eligible_slots=e),
                                 names, groups, st.lists(names, max_size=3)), max_size=30)
decides = st.builds(lambda e, s, c, sl, cand, m, d, x: pb.DecideRequest(
    event_id=e, surface=s, context=c, slots=sl, candidates=cand, mode=m, deferred_activation=d, explain=x),
    names, st.sampled_from(["", "default", "kiosk"]), groups, slots, collections, st.integers(-3, 9),
    st.booleans(), st.booleans())
rewards = st.builds(lambda e, s, v: pb.RewardRequest(event_id=e, slot_id=s, value=v), names, names, numbers)


def _good(client: PlacementClient) -> None:
    result = client.decide({"u": {"x": 1.0}}, ["homepage", "email"])
    assert client.reward(result.event_id, 1.0, slot_id="email") == "email"


def _assert_log_whole(server) -> None:
    for path in sorted((server.engine.config.data_dir / "events").rglob("*.jsonl")):  # workers' logs too
        for line in path.read_text().splitlines():
            record = json.loads(line)  # no half events: every line is a whole record
            assert record["kind"] in {"decision", "reward", "activate"}
            if record["kind"] == "reward":
                assert math.isfinite(record["value"])


def _status(call) -> grpc.StatusCode:
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        assert err.details(), "every refusal carries a message"
        return err.code()


def test_random_bytes_to_every_method(server, client):
    client.put_collections([collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(4)])
    channel = client.channel

    @FUZZ
    @given(st.binary(max_size=2000))
    def check(data: bytes):
        for method, kind in METHODS:
            if kind == "uu":
                call = lambda: channel.unary_unary(method)(data, timeout=10)
            elif kind == "us":
                call = lambda: list(channel.unary_stream(method)(data, timeout=10))
            elif kind == "su":
                call = lambda: channel.stream_unary(method)(iter([data]), timeout=10)
            else:
                call = lambda: list(channel.stream_stream(method)(iter([data, data]), timeout=10))
            code = _status(call)
            assert code in ALLOWED, (method, code)
        _good(client)

    check()
    _assert_log_whole(server)


def test_extreme_messages(server, client):
    client.put_collections([collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(4)])
    known = client.decide({}, ["homepage", "email"]).event_id

    @FUZZ
    @given(decides, rewards, st.booleans())
    def check(decide: pb.DecideRequest, reward: pb.RewardRequest, use_known: bool):
        if use_known:
            reward.event_id = known
        for call in (lambda: client.service.Decide(decide, timeout=10),
                     lambda: client.service.Reward(reward, timeout=10),
                     lambda: client.service.Activate(pb.ActivateRequest(event_id=reward.event_id), timeout=10),
                     lambda: list(client.service.DecideStream(iter([decide, decide]), timeout=10)),
                     lambda: client.admin.PutCollections(pb.PutCollectionsRequest(collections=decide.candidates),
                                                         timeout=10),
                     lambda: client.admin.GetModelInfo(pb.ModelRequest(surface=decide.surface), timeout=10),
                     lambda: client.admin.RollbackModel(pb.RollbackRequest(version=decide.mode), timeout=10)):
            code = _status(call)
            assert code in ALLOWED, code
        _good(client)

    check()
    _assert_log_whole(server)
    assert client.stats().decisions >= 60


def test_concurrent_calls_for_the_same_event(start_topology):
    """Racing Decides with one event id get one decision, logged once; racing
    rewards for it are all kept (the aggregation rule decides what they mean).
    The window is long: on a busy machine a racing call can arrive after a
    short one closed (then ALREADY_EXISTS is the right answer, not a race)."""
    server = start_topology(join=LONG_WINDOW)
    with PlacementClient(server.target) as client:
        client.put_collections([collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(4)])
        results, errors = [], []

        def decide() -> None:
            try:
                results.append(client.decide({"u": {"x": 1.0}}, ["homepage", "email"], event_id="same-event"))
            except grpc.RpcError as err:
                errors.append(err)

        threads = [threading.Thread(target=decide) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(results) == 16
        assert len({tuple((s.slot_id, s.collection_id, s.probability) for s in r.slots) for r in results}) == 1
        rewards = [threading.Thread(target=client.reward, args=("same-event", 1.0), kwargs={"slot_id": "email"})
                   for _ in range(8)]
        for t in rewards:
            t.start()
        for t in rewards:
            t.join()
        logged = [json.loads(line) for path in (server.engine.config.data_dir / "events").rglob("*.jsonl")
                  for line in path.read_text().splitlines()]
        assert sum(1 for r in logged if r["kind"] == "decision" and r["id"] == "same-event") == 1
        assert sum(1 for r in logged if r["kind"] == "reward" and r["id"] == "same-event") == 8
        server.engine.join_now(now=server.engine.clock() + 3600)
        assert client.stats().joined == 1 and client.stats().decisions == 1
