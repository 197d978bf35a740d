"""DecideStream on every topology: stalled streams never hold the threads
unary calls and health checks need (a bound on open streams, an idle timeout),
answers come in request order, and one bad request gets its own error in its
answer instead of ending the stream."""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from placement.v1 import placement_pb2 as pb
from server.client import PlacementClient, collection, decide_request

DECIDE_STREAM = "/placement.v1.PlacementService/DecideStream"


class HeldStream:
    """A DecideStream whose client sends when told and otherwise stays quiet."""

    def __init__(self, channel: grpc.Channel, timeout: float = 20.0):
        self.requests: queue.Queue = queue.Queue()
        self.answers: Iterator[pb.DecideResponse] = pb_stub(channel).DecideStream(iter(self.requests.get, None),
                                                                                 timeout=timeout)

    def send(self, request: pb.DecideRequest) -> None:
        self.requests.put(request)

    def close(self) -> None:
        self.requests.put(None)
        self.answers.cancel()


def pb_stub(channel: grpc.Channel):
    from placement.v1 import placement_pb2_grpc as pb_grpc
    return pb_grpc.PlacementServiceStub(channel)


def _catalog(client: PlacementClient) -> None:
    client.put_collections([collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(4)])


def _health(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status


def _stream_opens(client: PlacementClient, seconds: float = 10.0) -> None:
    """A new stream is served (a freed stream's place is given back when its
    call has ended, a moment after the client saw its status)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            assert len(list(client.decide_stream([decide_request({}, ["homepage"])]))) == 1
            return
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline, err
            time.sleep(0.05)


def test_stalled_streams_leave_unary_calls_and_health_answering(start_topology):
    """Issue 12: 16 streams that send one request and go quiet took all 16
    handler threads; every call, health included, hung until its deadline.
    All streams here share one connection, so they reach one serving process."""
    server = start_topology()  # defaults: threads = 16
    with PlacementClient(server.target) as client:
        _catalog(client)
        streams = [HeldStream(client.channel) for _ in range(24)]
        try:
            for stream in streams:
                stream.send(decide_request({}, ["homepage"]))
            assert next(streams[0].answers).slots
            # With the stalled streams open, unary calls and health answer.
            assert _health(client.channel) == health_pb2.HealthCheckResponse.SERVING
            for _ in range(20):
                assert client.decide({}, ["homepage"]).slots
            outcomes = []
            for stream in streams[1:]:
                try:
                    outcomes.append("served" if next(stream.answers).slots else "empty")
                except grpc.RpcError as err:
                    outcomes.append(err.code().name)
            # Beyond the bound on open streams: refused at once, not queued.
            assert "RESOURCE_EXHAUSTED" in outcomes and set(outcomes) <= {"served", "RESOURCE_EXHAUSTED"}, outcomes
        finally:
            for stream in streams:
                stream.close()
        _stream_opens(client)


def test_streams_beyond_the_bound_are_refused_and_their_place_returns(start_topology):
    server = start_topology(limits={"max_streams": 1})
    with PlacementClient(server.target) as client:
        _catalog(client)
        first = HeldStream(client.channel)
        first.send(decide_request({}, ["homepage"]))
        assert next(first.answers).slots
        second = HeldStream(client.channel)
        second.send(decide_request({}, ["homepage"]))
        try:
            next(second.answers)
            raise AssertionError("a stream beyond limits.max_streams was served")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limits.max_streams" in err.details()
        assert _health(client.channel) == health_pb2.HealthCheckResponse.SERVING
        assert client.decide({}, ["homepage"]).slots
        first.close()
        _stream_opens(client)


def test_an_idle_stream_is_ended_with_a_clear_status(start_topology):
    server = start_topology(limits={"max_streams": 1, "stream_idle_seconds": 0.5})
    with PlacementClient(server.target) as client:
        _catalog(client)
        stream = HeldStream(client.channel, timeout=60.0)
        stream.send(decide_request({}, ["homepage"], event_id="idle-1"))
        assert next(stream.answers).event_id == "idle-1"
        try:
            next(stream.answers)  # the client stays quiet, its own deadline far away
            raise AssertionError("an idle stream was not ended")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "limits.stream_idle_seconds" in err.details()
        stream.close()
        _stream_opens(client)  # its place is free again
        assert client.stats().decisions == 2  # the answer it got stands


def _settled_stats(client: PlacementClient, done, settle=lambda: None, seconds: float = 30.0) -> pb.Stats:
    """Stats once ``done`` holds (a coordinator reads its workers' logs and
    counters a moment after they wrote them), or the last ones seen."""
    deadline = time.monotonic() + seconds
    while True:
        settle()
        stats = client.stats()
        if done(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def _raw_stream(channel: grpc.Channel, messages: list[bytes]) -> list[pb.DecideResponse]:
    call = channel.stream_stream(DECIDE_STREAM, request_serializer=lambda b: b,
                                 response_deserializer=pb.DecideResponse.FromString)
    return list(call(iter(messages), timeout=30))


def test_one_bad_request_gets_its_own_error_and_the_stream_goes_on(start_topology):
    """Issue 11.4: a bad request used to end the whole stream."""
    server = start_topology(join={"window_seconds": 120})  # the repeats below find their decisions pending
    good = lambda i: decide_request({"u": {"seg": "a"}}, ["homepage", "email"], event_id=f"ok-{i}")
    with PlacementClient(server.target) as client:
        _catalog(client)
        requests = [good(0), decide_request({}, [], event_id="no-slots"), good(1),
                    decide_request({}, ["homepage"], ["nowhere"], event_id="unknown-collection"), good(2),
                    decide_request({}, ["homepage", "homepage"], event_id="dup-slot"), good(3)]
        wire = [r.SerializeToString() for r in requests]
        wire.insert(3, b"\xff\xff\xff")  # not a DecideRequest at all
        answers = _raw_stream(client.channel, wire)
        assert len(answers) == len(wire)
        errors = [(a.event_id, a.error.code, a.error.message) for a in answers if a.HasField("error")]
        assert [(e, c) for e, c, _ in errors] == [
            ("no-slots", grpc.StatusCode.INVALID_ARGUMENT.value[0]), ("", grpc.StatusCode.INVALID_ARGUMENT.value[0]),
            ("unknown-collection", grpc.StatusCode.NOT_FOUND.value[0]),
            ("dup-slot", grpc.StatusCode.INVALID_ARGUMENT.value[0])]
        assert "no slots" in errors[0][2] and "not a valid DecideRequest" in errors[1][2]
        assert "nowhere" in errors[2][2] and "duplicate slot" in errors[3][2]
        decided = [a for a in answers if not a.HasField("error")]
        assert [a.event_id for a in decided] == ["ok-0", "ok-1", "ok-2", "ok-3"]  # request order
        assert all(len(a.slots) == 2 for a in decided) and not any(a.slots for a in answers if a.HasField("error"))
        # The Python client gives each item its result or its error, in order.
        results = list(client.decide_stream(requests))
        assert [r.event_id for r in results] == [r.event_id for r in requests]
        assert [r.error.code if r.error else None for r in results] == [
            None, grpc.StatusCode.INVALID_ARGUMENT, None, grpc.StatusCode.NOT_FOUND, None,
            grpc.StatusCode.INVALID_ARGUMENT, None]
        assert results[0].chosen() == {s.slot_id: s.collection_id for s in answers[0].slots}  # the original
        stats = _settled_stats(client, lambda s: s.decisions >= 4 and s.bad_requests >= 7)
        assert stats.decisions == 4 and stats.bad_requests == 4 + 3  # both passes' refusals


def test_a_campaign_through_one_stream(start_topology):
    """Bulk work: 2,000 decisions through one stream, answered in order, every
    one logged and joined once."""
    server = start_topology()
    n = 2000
    with PlacementClient(server.target) as client:
        _catalog(client)
        requests = (decide_request({"u": {"seg": "abc"[i % 3]}}, ["homepage", "email"], event_id=f"camp-{i}")
                    for i in range(n))
        results = list(client.decide_stream(requests))
        assert [r.event_id for r in results] == [f"camp-{i}" for i in range(n)]
        assert all(r.error is None and len(r.slots) == 2 for r in results)
        assert _settled_stats(client, lambda s: s.decisions >= n).decisions == n
        stats = _settled_stats(client, lambda s: s.joined >= n, settle=lambda: server.engine.settle(ahead=3600))
        assert stats.joined == n and stats.pending == 0


@pytest.mark.single_process("counts the serving process's own threads")
def test_ended_streams_leave_no_reader_threads(start_topology):
    """Each open stream's requests are read by a helper thread; cancelled,
    idle-ended and finished streams all take theirs with them."""
    server = start_topology(limits={"stream_idle_seconds": 0.3})
    with PlacementClient(server.target) as client:
        _catalog(client)
        assert len(list(client.decide_stream([decide_request({}, ["homepage"])]))) == 1
        cancelled, idle = HeldStream(client.channel), HeldStream(client.channel)
        for stream in (cancelled, idle):
            stream.send(decide_request({}, ["homepage"]))
            assert next(stream.answers).slots
        cancelled.close()
        with pytest.raises(grpc.RpcError) as err:
            next(idle.answers)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.monotonic() + 10
        while any(t.name == "stream-reader" for t in threading.enumerate()):
            assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
            time.sleep(0.05)
        idle.close()
