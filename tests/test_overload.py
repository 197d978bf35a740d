"""Beyond capacity the server says RESOURCE_EXHAUSTED at once instead of queueing."""

from __future__ import annotations

import queue
import time

import grpc
import pytest

from server.client import PlacementClient, collection, decide_request


def _capacity_returns(client: PlacementClient, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            assert client.decide({}, ["homepage"]).slots
            return
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
            time.sleep(0.05)


def test_resource_exhausted_beyond_capacity_and_recovery(start):
    server = start(threads=4, limits={"max_concurrent_rpcs": 3})
    with PlacementClient(server.target) as client:
        client.put_collections([collection("a", {"c": {"x": 1.0}}), collection("b", {"c": {"x": 2.0}})])
        held: list[queue.Queue] = []
        streams = []
        for _ in range(3):  # three open streams occupy every slot
            q: queue.Queue = queue.Queue()
            held.append(q)
            stream = client.service.DecideStream(iter(q.get, None))
            q.put(decide_request({}, ["homepage"]))
            next(stream)
            streams.append(stream)
        started = time.monotonic()
        try:
            client.decide({}, ["homepage"])
            raise AssertionError("a call beyond capacity was accepted")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 1.0  # refused at once, not queued
        for q in held:
            q.put(None)
        for stream in streams:
            assert list(stream) == []
        _capacity_returns(client)  # once the streams end


def test_client_deadline_ends_a_stalled_stream_and_frees_capacity(start):
    server = start(limits={"max_concurrent_rpcs": 1})
    with PlacementClient(server.target) as client:
        client.put_collections([collection("a", {"c": {"x": 1.0}}), collection("b", {"c": {"x": 2.0}})])
        q: queue.Queue = queue.Queue()
        stream = client.service.DecideStream(iter(q.get, None), timeout=0.5)
        q.put(decide_request({}, ["homepage"]))
        next(stream)  # the client now stalls; its deadline passes
        with pytest.raises(grpc.RpcError) as err:
            next(stream)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        q.put(None)
        _capacity_returns(client)  # the server cancelled the stream
