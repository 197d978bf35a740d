"""DecideRequest.max_ranking: the response's rankings only as deep as asked,
on every topology; the decision, its propensity and its log line unchanged."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from placement.v1 import placement_pb2 as pb
from server.client import collection, decide_request

SLOTS = ["homepage", "email", "detail_page"]
CANDIDATES = [collection(f"depth-{i}", {"c": {"x": float(i % 3)}}) for i in range(8)]


def _request(event_id: str, max_ranking: int) -> pb.DecideRequest:
    return decide_request({"u": {"seg": "a"}}, SLOTS, CANDIDATES, event_id=event_id, max_ranking=max_ranking)


def _logged_ranks(data_dir: Path, event_id: str) -> list[int]:
    """How many ranking entries each slot of the event's logged decision has."""
    for path in sorted(Path(data_dir).rglob("events-*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("kind") == "decision" and rec["id"] == event_id:
                return [len(c["rank"]) for c in rec["choices"]]
    raise AssertionError(f"{event_id} not logged")


def test_max_ranking_cuts_the_response_ranking_and_nothing_else(server, client):
    data_dir = server.engine.config.data_dir
    chosen_below_the_top = 0
    for n in range(12):
        depth = 1 + n % 3
        cut = client.service.Decide(_request(f"depth-{n}", depth), timeout=10)
        full = client.service.Decide(_request(f"depth-{n}", 0), timeout=10)  # the same decision, repeated
        assert len(full.slots) == len(cut.slots) == len(SLOTS)
        for k, (c, f) in enumerate(zip(cut.slots, full.slots)):
            assert len(f.ranking) == len(CANDIDATES) - k  # 0: every candidate the slot could show
            assert list(c.ranking) == list(f.ranking)[:depth]
            assert (c.collection_id, c.probability) == (f.collection_id, f.probability)
            assert f.probability == {r.collection_id: r.probability for r in f.ranking}[f.collection_id]
            chosen_below_the_top += c.collection_id not in {r.collection_id for r in c.ranking}
        assert _logged_ranks(data_dir, f"depth-{n}") == [len(CANDIDATES) - k for k in range(len(SLOTS))]
    assert chosen_below_the_top > 0  # the propensity came with choices the cut ranking leaves out


def test_max_ranking_in_a_stream(client):
    ids = [uuid.uuid4().hex for _ in range(4)]
    answers = list(client.service.DecideStream(iter(_request(i, 2) for i in ids), timeout=30))
    assert [a.event_id for a in answers] == ids
    assert all(len(s.ranking) == 2 and s.probability > 0 for a in answers for s in a.slots)
