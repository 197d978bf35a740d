"""A tiny planted world for tests: the best collection depends on segment and slot."""

from __future__ import annotations

import random

from bandit.logformat.events import joined_from_dsjson, read_lines
from bandit.features import Candidate, FeatureGroup, SlotSpec
from bandit.decision import DecisionInput
from server.client import PlacementClient, collection

SEGMENTS = ("a", "b", "c")
SLOTS = ("homepage", "email", "detail_page")
COLLECTIONS = tuple(f"col-{i}" for i in range(5))
BEST = {(seg, slot): COLLECTIONS[(i + 2 * j) % len(COLLECTIONS)]
        for i, seg in enumerate(SEGMENTS) for j, slot in enumerate(SLOTS)}
# A join window no call outlasts, even on a busy machine; for tests that join
# explicitly (settle, join_now) and send rewards whenever their calls return.
LONG_WINDOW = {"window_seconds": 60.0, "tick_seconds": 0.02}


def click_probability(seg: str, slot: str, collection: str) -> float:
    return 0.6 if BEST[(seg, slot)] == collection else 0.05


def candidates() -> tuple[Candidate, ...]:
    return tuple(Candidate(cid, (FeatureGroup("collection", {"kind": "seasonal" if i % 2 else "regular",
                                                             "price": 0.1 * i}),))
                 for i, cid in enumerate(COLLECTIONS))


def decision_input(seg: str, rng: random.Random | None = None) -> DecisionInput:
    hour = (rng or random.Random(0)).random()
    return DecisionInput((FeatureGroup("customer", {"segment": seg, "hour": hour}),),
                         tuple(SlotSpec(s) for s in SLOTS), candidates())


def register_collections(client: PlacementClient) -> None:
    client.put_collections([collection(cid, {"collection": {"rank": float(i)}}) for i, cid in enumerate(COLLECTIONS)])


def drive(client: PlacementClient, n: int, seed: int, mode: str | None = None) -> None:
    """n decisions of the planted world, each click rewarded at once."""
    rng = random.Random(seed)
    for _ in range(n):
        seg = rng.choice(SEGMENTS)
        result = client.decide({"customer": {"segment": seg}}, SLOTS, mode=mode)
        for slot_id, cid in result.chosen().items():
            if rng.random() < click_probability(seg, slot_id, cid):
                client.reward(result.event_id, 1.0, slot_id=slot_id)


def settle(server) -> None:
    """Close every pending join now and wait for the learner to publish it."""
    server.engine.settle(ahead=3600)


def logged_decisions(data) -> list[dict]:
    """Every decision record of every event log of a data directory (any topology)."""
    return [obj for path in sorted((data / "events").rglob("*.jsonl"))
            for _, obj in read_lines(path, strict=False) if obj.get("kind") == "decision"]


def joined_items(data, surface: str = "default") -> list:
    """The joined examples of a surface's joined log, in log order."""
    return [joined_from_dsjson(obj) for path in sorted((data / "joined" / surface).glob("*.dsjson"))
            for _, obj in read_lines(path, strict=False)]


def plain_vw(settings, logs, model) -> None:
    """Train ``python -m vowpalwabbit --dsjson`` (the server's VW arguments) on
    joined logs into ``model``: what an analyst retrains offline."""
    import subprocess
    import sys

    from bandit.vwargs import vw_arguments

    run = subprocess.run([sys.executable, "-m", "vowpalwabbit", *vw_arguments(settings, dsjson=True).split(),
                          *[a for log in logs for a in ("-d", str(log))], "-f", str(model)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def assert_same_model(a, b) -> None:
    """Two policies give every slot of every segment the same distribution."""
    import pytest

    for seg in SEGMENTS:
        inp = decision_input(seg)
        for k in range(len(inp.slots)):
            pa = dict(a.slot_distribution(inp, k, range(len(inp.candidates))))
            pb = dict(b.slot_distribution(inp, k, range(len(inp.candidates))))
            assert pa == pytest.approx(pb, abs=1e-6)
