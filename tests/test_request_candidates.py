"""Candidates given in a request follow the catalog's rule: a collection is
offered only in the slots it is eligible for and only inside its active
window, whether it came with its features or by id from the catalog. Nothing
a client sends about eligibility is ignored: what cannot apply is refused."""

from __future__ import annotations

import uuid

import grpc
import pytest

from placement.v1 import placement_pb2 as pb
from server.client import PlacementClient, collection, decide_request

CODE = grpc.StatusCode
T1970 = 86_400.0  # 2 January 1970
T2100 = 4_102_444_800.0


def _offered(client: PlacementClient, slots: list[str], candidates, at: float | None = None) -> list[set[str]]:
    """Per slot, every collection the decision could have shown (its ranking)."""
    request = decide_request({"u": {"seg": "a"}}, slots, candidates, event_id=uuid.uuid4().hex, at=at)
    response = client.service.Decide(request, timeout=10)
    return [{r.collection_id for r in s.ranking} for s in response.slots]


def _refused(client: PlacementClient, request: pb.DecideRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        client.service.Decide(request, timeout=10)
    return err.value


def test_a_request_candidate_is_offered_only_in_its_eligible_slots(shared_client):
    cands = [collection("rq-email-only", {"c": {"x": 1.0}}, eligible_slots=["email"]),
             collection("rq-anywhere", {"c": {"x": 2.0}}), collection("rq-anywhere-2", {"c": {"x": 3.0}})]
    for _ in range(5):
        homepage, email = _offered(shared_client, ["homepage", "email"], cands)
        assert "rq-email-only" not in homepage, homepage
        assert homepage <= {"rq-anywhere", "rq-anywhere-2"} and email
    assert _offered(shared_client, ["email"], cands) == [{"rq-email-only", "rq-anywhere", "rq-anywhere-2"}]


def test_a_request_candidate_outside_its_window_is_not_offered(shared_client):
    expired = collection("rq-expired", {"c": {"x": 1.0}}, active_until=T1970)
    future = collection("rq-future", {"c": {"x": 2.0}}, active_from=T2100)
    always = collection("rq-always", {"c": {"x": 3.0}})
    assert _offered(shared_client, ["homepage"], [expired, future, always]) == [{"rq-always"}]
    # The request's moment decides, as for the catalog.
    assert _offered(shared_client, ["homepage"], [expired, future, always], at=T2100 + 1) == [
        {"rq-future", "rq-always"}]
    assert _offered(shared_client, ["homepage"], [expired, future, always], at=T1970 - 1) == [
        {"rq-expired", "rq-always"}]
    err = _refused(shared_client, decide_request({}, ["homepage"], [expired, future], event_id=uuid.uuid4().hex))
    assert err.code() == CODE.FAILED_PRECONDITION and "no eligible collection" in err.details(), err.details()


def test_an_id_only_candidate_brings_the_catalogs_eligibility_and_window(shared_client):
    shared_client.put_collections([
        collection("cat-email-only", {"c": {"x": 1.0}}, eligible_slots=["email"]),
        collection("cat-expired", {"c": {"x": 2.0}}, active_until=T1970),
        collection("cat-anywhere", {"c": {"x": 3.0}})])
    ids = ["cat-email-only", "cat-expired", "cat-anywhere"]
    assert _offered(shared_client, ["homepage"], ids + [collection("rq-other", {"c": {"x": 4.0}})]) == [
        {"cat-anywhere", "rq-other"}]
    assert _offered(shared_client, ["email"], ids) == [{"cat-email-only", "cat-anywhere"}]


@pytest.mark.parametrize("given", [
    {"eligible_slots": ["email"]}, {"active_from": T1970}, {"active_until": T2100}])
def test_eligibility_on_an_id_only_candidate_is_refused_not_ignored(shared_client, given):
    shared_client.put_collections([collection("cat-plain", {"c": {"x": 1.0}})])
    err = _refused(shared_client, decide_request({}, ["homepage"], [collection("cat-plain", **given)],
                                                 event_id=uuid.uuid4().hex))
    assert err.code() == CODE.INVALID_ARGUMENT, err
    assert "collection 'cat-plain'" in err.details() and "catalog" in err.details(), err.details()


def test_a_request_candidate_window_must_be_a_window(shared_client):
    bad = collection("rq-backwards", {"c": {"x": 1.0}}, active_from=T2100, active_until=T1970)
    err = _refused(shared_client, decide_request({}, ["homepage"], [bad], event_id=uuid.uuid4().hex))
    assert err.code() == CODE.INVALID_ARGUMENT and "active_until is not after active_from" in err.details()
    err = _refused(shared_client, decide_request(
        {}, ["homepage"], [collection("rq-bad-slot", {"c": {"x": 1.0}}, eligible_slots=["_label"])],
        event_id=uuid.uuid4().hex))
    assert err.code() == CODE.INVALID_ARGUMENT and "eligible slot" in err.details(), err.details()


def test_a_repeated_candidate_list_follows_the_catalog_and_is_checked_every_time(server):
    """The same list of ids, request after request (what the server keeps
    converted), offers what the catalog holds at each call: a collection
    made ineligible is not offered, a deleted one is NOT_FOUND; a list
    refused once (duplicate ids) is refused every time."""
    ids = ["list-a", "list-b", "list-c"]
    with PlacementClient(server.target) as client:
        client.put_collections([collection(i, {"c": {"x": float(n)}}) for n, i in enumerate(ids)])
        for _ in range(3):
            assert _offered(client, ["homepage"], ids) == [set(ids)]
        client.put_collections([collection("list-a", {"c": {"x": 0.0}}, eligible_slots=["email"])])
        for _ in range(3):
            assert _offered(client, ["homepage"], ids) == [{"list-b", "list-c"}]
        client.delete_collection("list-c")
        for _ in range(3):
            err = _refused(client, decide_request({}, ["homepage"], ids, event_id=uuid.uuid4().hex))
            assert err.code() == CODE.NOT_FOUND and "list-c" in err.details(), err.details()
        twice = [collection("rq-twice", {"c": {"x": 1.0}}), collection("rq-twice", {"c": {"x": 1.0}})]
        for _ in range(3):
            err = _refused(client, decide_request({}, ["homepage"], twice, event_id=uuid.uuid4().hex))
            assert err.code() == CODE.INVALID_ARGUMENT and "duplicate collection ids" in err.details()
