"""The benchmark's request: one seeded, realistic Decide request, in every form
the measured paths need (plain dicts, engine core types, protobuf bytes, VW text).

Shape (per request):
  context     3 groups, 10 features  (user: 4, session: 3, geo: 3; mixed numeric/categorical)
  collection  2 groups, 6 features   (meta: 3 categorical, stats: 3 numeric) + identity
  slot        1 group, 2 features    (layout: position numeric, format categorical) + identity

Every run with the same seed builds byte-identical requests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from bandit.features import Candidate, FeatureGroup, SlotSpec
from bandit.decision import DecisionInput

SLOT_IDS = ("hero", "row1", "row2", "row3", "row4")
SEGMENTS = ("student", "family", "senior", "professional", "bargain", "luxury")
LOYALTY = ("none", "silver", "gold", "platinum")
DEVICES = ("mobile", "desktop", "tablet")
COUNTRIES = ("de", "fr", "it", "es", "nl", "pl", "se")
CATEGORIES = ("shoes", "outdoor", "kitchen", "toys", "garden", "beauty", "books", "tech",
              "sport", "fashion", "home", "music")
PRICE_BANDS = ("budget", "mid", "premium", "luxury")
SEASONS = ("spring", "summer", "autumn", "winter")
FORMATS = ("banner", "carousel", "grid")

Features = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Workload:
    """One request shape: ``candidates`` collections, ``slots`` slots."""

    candidates: int
    slots: int
    context: Features
    collections: tuple[tuple[str, Features], ...]
    slot_specs: tuple[tuple[str, Features], ...]

    @property
    def label(self) -> str:
        return f"{self.candidates}x{self.slots}"

    # --- engine core types ----------------------------------------------------------

    def decision_input(self) -> DecisionInput:
        return DecisionInput(feature_groups(self.context), self.slot_tuple(), self.candidate_tuple())

    def candidate_tuple(self) -> tuple[Candidate, ...]:
        return tuple(Candidate(cid, feature_groups(f)) for cid, f in self.collections)

    def slot_tuple(self) -> tuple[SlotSpec, ...]:
        return tuple(SlotSpec(sid, feature_groups(f)) for sid, f in self.slot_specs)

    def context_groups(self) -> tuple[FeatureGroup, ...]:
        return feature_groups(self.context)

    # --- the wire ---------------------------------------------------------------------

    def request_bytes(self) -> bytes:
        """The serialized DecideRequest (no event id: the server assigns one)."""
        from server.client import collection, decide_request, slot

        req = decide_request(self.context, [slot(sid, f) for sid, f in self.slot_specs],
                             [collection(cid, f) for cid, f in self.collections])
        return req.SerializeToString()


def feature_groups(features: Features) -> tuple[FeatureGroup, ...]:
    return tuple(FeatureGroup(name, dict(feats)) for name, feats in features.items())


def make_workload(candidates: int, slots: int, seed: int) -> Workload:
    """A realistic request; the same (candidates, slots, seed) gives the same request."""
    rng = random.Random(f"{seed}:{candidates}:{slots}")
    context = {
        "user": {"segment": rng.choice(SEGMENTS), "age": round(rng.uniform(0.1, 0.9), 4),
                 "tenure_days": float(rng.randint(1, 2000)), "loyalty": rng.choice(LOYALTY)},
        "session": {"device": rng.choice(DEVICES), "hour": float(rng.randint(0, 23)),
                    "pages_viewed": float(rng.randint(1, 40))},
        "geo": {"country": rng.choice(COUNTRIES), "region": f"r{rng.randint(1, 30)}",
                "distance_km": round(rng.uniform(0, 500), 2)},
    }
    collections = []
    for i in range(candidates):
        collections.append((f"col-{i:04d}", {
            "meta": {"category": rng.choice(CATEGORIES), "price_band": rng.choice(PRICE_BANDS),
                     "season": rng.choice(SEASONS)},
            "stats": {"ctr": round(rng.uniform(0.001, 0.2), 5), "margin": round(rng.uniform(0.05, 0.6), 4),
                      "age_days": float(rng.randint(0, 365))},
        }))
    slot_specs = tuple((SLOT_IDS[k], {"layout": {"position": float(k + 1), "format": rng.choice(FORMATS)}})
                       for k in range(slots))
    return Workload(candidates, slots, context, tuple(collections), slot_specs)


# --- what a user writes by hand (measurement B) ------------------------------------------

def _ns(prefix: str, groups: Features) -> str:
    parts = []
    for group, feats in groups.items():
        body = " ".join(f"{k}={v}" if isinstance(v, str) else f"{k}:{v}" for k, v in feats.items())
        parts.append(f"|{prefix}.{group} {body}")
    return " ".join(parts)


def naive_lines(w: Workload) -> list[str]:
    """Straightforward per-request string building: one multi-slot ccb example,
    the same namespaces and features the engine sends to VW."""
    lines = [f"ccb shared {_ns('C', w.context)}"]
    for cid, feats in w.collections:
        lines.append(f"ccb action |A id={cid} {_ns('A', feats)}")
    for sid, feats in w.slot_specs:
        lines.append(f"ccb slot |S id={sid} {_ns('S', feats)}")
    return lines
