"""Single-choice rows with a position column (issue 13 point 4): each
position is valued on its own rows over its own candidate set (the collections
seen there), "uniform" is uniform over that position's candidates, and the
page is the sum of the position values. Synthetic CSV with a computable truth."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bandit.logformat.events import read_joined
from bandit.logformat.tabular import build_mapping, import_log
from simulator.replay.options import EstimationConfig, ReplayOptions
from simulator.replay.pipeline import run_replay

# Each position has its own candidates (as in a log where some items never go in some slots).
POSITIONS = {"0": list("abcde"), "1": list("abcdefgh"), "2": list("cdefg")}
SEGMENTS = ("student", "parent")


def click_probability(segment: str, position: str, item: str) -> float:
    base = {"0": 0.30, "1": 0.15, "2": 0.08}[position]
    lift = (ord(item) - ord("a")) / 10.0 if segment == "student" else (ord("h") - ord(item)) / 14.0
    return base * (0.5 + lift)


def logging_distribution(segment: str, position: str) -> dict[str, float]:
    items = POSITIONS[position]
    raw = np.array([1.0 + 2.0 * (i % 3 == (segment == "student")) for i in range(len(items))])
    return dict(zip(items, raw / raw.sum()))


def true_uniform(position: str) -> float:
    """Segments equally likely; uniform over the position's own candidates."""
    return float(np.mean([click_probability(s, position, a) for s in SEGMENTS for a in POSITIONS[position]]))


def write_csv(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["ts", "segment", "position", "item", "prob", "click"])
        for i in range(n):
            seg, pos = SEGMENTS[rng.integers(2)], str(rng.integers(3))
            dist = logging_distribution(seg, pos)
            items = list(dist)
            item = items[rng.choice(len(items), p=list(dist.values()))]
            click = int(rng.random() < click_probability(seg, pos, item))
            out.writerow([1.7e9 + i, seg, pos, item, dist[item], click])
    return path


MAPPING = dict(action="item", reward="click", propensity="prob", context="segment", slot="position",
               timestamp="ts")
CFG = EstimationConfig(estimators=("ips", "snips", "dm", "dr"), slate=("sips",), intervals=("normal",))


def _entry(results: dict, policy: str, estimator: str, scope: str) -> dict:
    pol = next(p for p in results["policies"] if p["name"] == policy)
    return next(e for e in pol["estimates"] if e["estimator"] == estimator and e["scope"] == scope)


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> list[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("positions")
    out = []
    for seed in range(3):
        source = write_csv(root / f"log{seed}.csv", 6000, seed)
        log = root / f"log{seed}.dsjson"
        summary = import_log(source, log, build_mapping(None, **MAPPING))
        assert summary.rows_rejected == 0
        out.append((source, log))
    return out


def test_each_position_offers_the_collections_seen_there(imported) -> None:
    _, log = imported[0]
    by_slot: dict[str, set[tuple[str, ...]]] = {}
    for joined in read_joined([log]):
        (choice,) = joined.decision.choices
        by_slot.setdefault(choice.slot_id, set()).add(tuple(c.id for c in joined.decision.inp.candidates))
    assert by_slot == {pos: {tuple(items)} for pos, items in POSITIONS.items()}


def test_uniform_is_valued_per_position_and_the_page_is_their_sum(imported) -> None:
    """Over three seeds, IPS/SNIPS of uniform cover each position's truth (uniform
    over that position's candidates) and the page truth (their sum) within 4 se."""
    page_truth = sum(true_uniform(p) for p in POSITIONS)
    for _, log in imported:
        results = run_replay([log], ReplayOptions(policies=("uniform", "logged"), estimation=CFG))
        assert results["log"]["slots"] == ["0", "1", "2"]
        for estimator in ("ips", "snips", "dr"):
            for pos in POSITIONS:
                e = _entry(results, "uniform", estimator, f"slot:{pos}")
                assert abs(e["value"] - true_uniform(pos)) < 4 * e["se"], (estimator, pos, e)
                assert e["n"] < 2500  # its own rows, not the pooled 6000
            page = _entry(results, "uniform", estimator, "page")
            assert abs(page["value"] - page_truth) < 4 * page["se"], (estimator, page)
            slots = sum(_entry(results, "uniform", estimator, f"slot:{p}")["value"] for p in POSITIONS)
            assert page["value"] == pytest.approx(slots, rel=1e-9)


def test_logged_ips_equals_each_positions_mean_and_slates_are_refused(imported) -> None:
    source, log = imported[0]
    rows = list(csv.DictReader(open(source)))
    results = run_replay([log], ReplayOptions(policies=("logged",), estimation=CFG))
    for pos in POSITIONS:
        mean = np.mean([float(r["click"]) for r in rows if r["position"] == pos])
        assert _entry(results, "logged", "ips", f"slot:{pos}")["value"] == pytest.approx(mean, abs=1e-12)
    assert _entry(results, "logged", "sips", "page")["refused"] == "not_a_slate"


def test_a_candidate_column_sets_each_positions_candidates(tmp_path: Path) -> None:
    source = tmp_path / "c.csv"
    source.write_text("position,item,prob,click,avail\n0,a,0.5,1,a|b\n1,c,0.25,0,a|b|c|d\n0,b,0.5,0,a|b\n")
    log = tmp_path / "c.dsjson"
    import_log(source, log, build_mapping(None, action="item", reward="click", propensity="prob",
                                          slot="position", candidates="avail"))
    cands = {e.decision.choices[0].slot_id: [c.id for c in e.decision.inp.candidates] for e in read_joined([log])}
    assert cands == {"0": ["a", "b"], "1": ["a", "b", "c", "d"]}
