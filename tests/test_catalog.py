"""The catalog's candidate sets: windows, eligibility, and the kept answers."""

from __future__ import annotations

import json

from bandit.catalog import Catalog, Collection
from bandit.features import FeatureGroup, SlotSpec

T0 = 1_800_000_000.0
SLOTS = (SlotSpec("homepage"), SlotSpec("email"))


def _ids(catalog: Catalog, at: float, slots=SLOTS) -> list[str]:
    return [c.id for c in catalog.candidates_for(slots, at).candidates]


def test_kept_answers_follow_windows_and_changes():
    catalog = Catalog()
    catalog.put([Collection("always", (FeatureGroup("c", {"x": 1.0}),)),
                 Collection("seasonal", (FeatureGroup("c", {"x": 2.0}),), active_from=T0, active_until=T0 + 100)])
    # The same slot list asked at times on both sides of each boundary, back and forth.
    for at, expected in [(T0 - 1, ["always"]), (T0, ["always", "seasonal"]), (T0 + 50, ["always", "seasonal"]),
                         (T0 + 100, ["always"]), (T0 + 99.999, ["always", "seasonal"]), (T0 - 1e9, ["always"])]:
        assert _ids(catalog, at) == expected, at
    first = catalog.candidates_for(SLOTS, T0 + 1)
    assert catalog.candidates_for(SLOTS, T0 + 2).candidates[0] is first.candidates[0]  # the same objects
    catalog.put([Collection("email-only", (FeatureGroup("c", {"x": 3.0}),), eligible_slots=("email",))])
    after = catalog.candidates_for(SLOTS, T0 + 2)
    assert [c.id for c in after.candidates] == ["always", "email-only", "seasonal"]
    assert after.eligible == ((0, 2), None)
    assert _ids(catalog, T0 + 2, (SlotSpec("homepage"),)) == ["always", "email-only", "seasonal"]
    catalog.delete("seasonal")
    assert _ids(catalog, T0 + 2) == ["always", "email-only"]


def test_a_catalog_file_from_before_the_naming_rule_loads_without_what_it_now_refuses(tmp_path, caplog):
    path = tmp_path / "catalog.json"
    Catalog(path).put([Collection("ok", (FeatureGroup("c", {"x": 1.0}),))])
    raw = json.loads(path.read_text())
    raw["collections"].append({"id": "old", "groups": {"c": {"_label": "x"}}})
    path.write_text(json.dumps(raw))
    loaded = Catalog(path)
    assert [c.id for c in loaded.list()] == ["ok"]
    assert "collection 'old' not loaded" in caplog.text and "'_label'" in caplog.text
