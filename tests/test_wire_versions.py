"""A model version is one number on the wire: every message that names one
carries it as an int64 (the string fields, kept for existing clients, are its
decimal form), so a client compares versions without parsing strings."""

from __future__ import annotations

import uuid

from placement.v1 import placement_pb2 as pb
from server.client import collection, decide_request


def test_every_version_field_carries_the_int64_of_model_version(shared_client):
    cands = [collection(f"wv{i}", {"c": {"x": float(i)}}) for i in range(2)]
    response = shared_client.service.Decide(decide_request({}, ["homepage"], cands, event_id=uuid.uuid4().hex),
                                            timeout=10)
    info = shared_client.admin.GetModelInfo(pb.ModelRequest(), timeout=10)
    stats = shared_client.admin.GetStats(pb.StatsRequest(), timeout=10)
    numbers = {v.version for v in info.versions}
    assert response.model_version_number in numbers and str(response.model_version_number) == response.model_version
    assert info.current_version_number in numbers and str(info.current_version_number) == info.current_version
    surface = next(s for s in stats.surfaces if s.surface == "default")
    assert surface.model_version_number in numbers and str(surface.model_version_number) == surface.model_version
