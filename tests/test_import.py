"""`placement import`: tabular logs into the joined DSJSON log, on real files."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from bandit.logformat.events import read_joined
from bandit.logformat.tabular import MappingError, build_mapping, import_log, read_rejects
from simulator.commands.import_log import import_log as import_command

HEADER = "age,segment,collection,prob,clicked,ts,avail"
SINGLE = [
    "31,student,a,0.5,1,2024-05-01T10:00:00Z,a|b|c",   # 1 good
    "45,parent,c,0.8,0,1714557600,a|b|c",              # 2 good, epoch timestamp
    "22,student,b,,1,1714557600,a|b|c",                # 3 missing propensity
    "22,student,b,nan,1,1714557600,a|b|c",             # 4 NaN propensity
    "22,student,b,0,1,1714557600,a|b|c",               # 5 propensity 0
    "22,student,b,1.5,1,1714557600,a|b|c",             # 6 propensity > 1
    "22,student,b,0.5,lots,1714557600,a|b|c",          # 7 reward not a number
    "22,student,b,0.5,inf,1714557600,a|b|c",           # 8 reward not finite
    "22,student,d,0.5,1,1714557600,a|b|c",             # 9 action not in candidates
    "22,student,b,0.5,1,yesterday,a|b|c",              # 10 bad timestamp
    "inf,student,b,0.5,1,1714557600,a|b|c",            # 11 bad feature value
    "27,,b,1,0.25,2024-05-01T12:00:00,b|c",            # 12 good: segment absent, naive ISO
]
SINGLE_MAP = dict(action="collection", reward="clicked", propensity="prob", timestamp="ts",
                  candidates="avail", context="user:age,user:segment")


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def vw_examples(path: Path) -> int:
    proc = subprocess.run([sys.executable, "-m", "vowpalwabbit", "--dsjson", "--ccb_explore_adf", "-d", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return int(re.search(r"number of examples = (\d+)", proc.stderr + proc.stdout).group(1))


def test_csv_good_and_bad_rows(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "log.csv", HEADER, SINGLE)
    out, rej = tmp_path / "out.json", tmp_path / "rejects.csv"
    summary = import_log(src, out, build_mapping(None, **SINGLE_MAP), rejects_path=rej)

    assert (summary.rows_read, summary.rows_written, summary.decisions_written) == (12, 3, 3)
    assert summary.rows_rejected == 9
    events = list(read_joined([out]))
    assert [e.decision.event_id for e in events] == ["row-1", "row-2", "row-12"]

    first, second, third = (e.decision for e in events)
    assert [c.id for c in first.inp.candidates] == ["a", "b", "c"]
    assert first.inp.context[0].name == "user"
    assert dict(first.inp.context[0].features) == {"age": 31.0, "segment": "student"}
    assert [s.id for s in first.inp.slots] == ["slot_0"]
    choice = first.choices[0]
    assert first.inp.candidates[choice.action].id == "a" and choice.probability == 0.5
    # only the chosen propensity is known: nothing invented for the others, and the event says so
    assert choice.ranking == ((choice.action, 0.5),) and first.chosen_only
    assert events[0].rewards == (1.0,) and events[1].rewards == (0.0,)
    assert first.timestamp == datetime(2024, 5, 1, 10, tzinfo=timezone.utc).timestamp()
    assert second.timestamp == 1714557600.0
    assert second.inp.candidates[second.choices[0].action].id == "c"
    assert [c.id for c in third.inp.candidates] == ["b", "c"]
    assert dict(third.inp.context[0].features) == {"age": 27.0}  # empty cell: feature absent
    assert third.choices[0].ranking == ((0, 1.0),)
    assert events[2].rewards == (0.25,)
    assert third.timestamp == datetime(2024, 5, 1, 12, tzinfo=timezone.utc).timestamp()

    reasons = {r.row: (r.kind, r.reason) for r in read_rejects(rej)}
    assert sorted(reasons) == list(range(3, 12))
    assert reasons[3] == ("propensity", "missing propensity")
    assert reasons[4] == ("propensity", "propensity is NaN")
    assert "not in (0, 1]" in reasons[5][1] and "not in (0, 1]" in reasons[6][1]
    assert reasons[7] == ("reward", "reward 'lots' is not a number")
    assert reasons[8] == ("reward", "reward inf is not finite")
    assert reasons[9] == ("candidates", "action 'd' is not in the candidate set")
    assert reasons[10][0] == "timestamp" and "yesterday" in reasons[10][1]
    assert reasons[11][0] == "feature" and "age" in reasons[11][1]
    assert summary.by_kind["propensity"] == 4


def test_default_candidates_are_all_actions_seen(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "log.csv", "x,col,p,r", ["1,b,0.5,1", "2,a,0.5,0", "3,c,0.2,1"])
    out = tmp_path / "out.json"
    import_log(src, out, build_mapping(None, action="col", reward="r", propensity="p", context="x"))
    events = list(read_joined([out]))
    assert all([c.id for c in e.decision.inp.candidates] == ["a", "b", "c"] for e in events)
    assert events[2].decision.choices[0].ranking == ((2, 0.2),)
    assert events[0].decision.inp.context[0].name == "context"


def test_duplicate_event_without_slot_column(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "log.csv", "sid,col,p,r", ["e1,a,0.5,1", "e2,b,0.5,0", "e1,b,0.5,1"])
    out, rej = tmp_path / "out.json", tmp_path / "rej.csv"
    summary = import_log(src, out, build_mapping(None, action="col", reward="r", propensity="p", event="sid"),
                         rejects_path=rej)
    assert [e.decision.event_id for e in read_joined([out])] == ["e2"]
    assert summary.decisions_rejected == 1
    reasons = {r.row: r.reason for r in read_rejects(rej)}
    assert reasons[3] == "duplicate event id 'e1' (no slot column mapped), first at row 1"
    assert reasons[1].startswith("decision rejected whole: row 3 is bad")


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "sid": ["e1", "e1", "e2", "e3", "e3", "e4"],
        "pos": [2, 1, 1, 1, 2, 1],
        "age": [31.5, 31.5, None, 22.0, 22.0, 40.0],
        "segment": ["student", "student", "parent", "student", "student", "x"],
        "collection": ["b", "a", "c", "a", "b", "a"],
        "prob": [0.25, 0.5, 0.6, 0.5, None, 0.9],
        "clicked": [0, 1, 1, 1, 0, 2.5],
        "ts": ["2024-05-01T10:00:00Z"] * 6,
    })


MULTI_MAP = dict(action="collection", reward="clicked", propensity="prob", timestamp="ts", slot="pos",
                 event="sid", context="user:age,user:segment")


def test_parquet_gives_the_same_log_as_csv(tmp_path: Path) -> None:
    frame = _frame()
    frame.to_csv(tmp_path / "log.csv", index=False)
    frame.to_parquet(tmp_path / "log.parquet", index=False)
    mapping = build_mapping(None, **MULTI_MAP)
    a = import_log(tmp_path / "log.csv", tmp_path / "csv.json", mapping, rejects_path=tmp_path / "csv.rej")
    b = import_log(tmp_path / "log.parquet", tmp_path / "pq.json", mapping, rejects_path=tmp_path / "pq.rej",
                   chunk_rows=2)
    assert a.decisions_written == b.decisions_written == 3
    assert (tmp_path / "csv.json").read_text() == (tmp_path / "pq.json").read_text()
    assert (tmp_path / "csv.rej").read_text() == (tmp_path / "pq.rej").read_text()


def test_multi_slot_grouping_and_whole_decision_rejection(tmp_path: Path) -> None:
    rows = [
        "e1,2,student,b,0.25,0,a|b|c",   # 1  e1 slot 2 (before slot 1 in the file)
        "e2,1,parent,c,0.6,1,a|b|c",     # 2  e2 slot 1
        "e1,1,student,a,0.5,1,a|b|c",    # 3  e1 slot 1 (not adjacent to row 1)
        "e3,1,student,a,0.5,1,a|b|c",    # 4  e3: good row ...
        "e3,2,student,b,,0,a|b|c",       # 5  ... and a bad one: whole decision rejected
        "e4,1,student,a,0.5,1,a|b|c",    # 6  e4: duplicate (event, slot)
        "e4,1,student,b,0.5,1,a|b|c",    # 7
        "e5,1,student,a,0.5,1,a|b",      # 8  e5: per-slot candidate sets
        "e5,2,student,c,0.5,0,c",        # 9
        "e6,1,student,a,0.5,1,a|b|c",    # 10 e6: same collection in two slots
        "e6,2,student,a,0.5,1,a|b|c",    # 11
        "e7,top,student,a,0.5,1,a|b|c",  # 12 named slot ...
        "e7,x y,student,b,0.5,1,a|b|c",  # 13 ... and an unknown slot format
    ]
    src = write_csv(tmp_path / "log.csv", "sid,pos,segment,collection,prob,clicked,avail", rows)
    out, rej = tmp_path / "out.json", tmp_path / "rej.csv"
    mapping = build_mapping(None, action="collection", reward="clicked", propensity="prob", slot="pos",
                            event="sid", candidates="avail", context="segment")
    summary = import_log(src, out, mapping, rejects_path=rej, chunk_rows=3)

    events = {e.decision.event_id: e for e in read_joined([out])}
    assert list(events) == ["e2", "e1", "e5"]  # written when their last row is read
    assert (summary.decisions_written, summary.rows_written, summary.rows_rejected) == (3, 5, 8)
    e1 = events["e1"]
    ids = [c.id for c in e1.decision.inp.candidates]
    assert [s.id for s in e1.decision.inp.slots] == ["1", "2"]
    assert [ids[c.action] for c in e1.decision.choices] == ["a", "b"]
    assert [c.probability for c in e1.decision.choices] == [0.5, 0.25]
    assert e1.rewards == (1.0, 0.0)
    slot2 = dict(e1.decision.choices[1].ranking)
    assert slot2 == {ids.index("b"): 0.25} and e1.decision.chosen_only  # only the chosen propensity is known
    e5 = events["e5"].decision
    assert [c.id for c in e5.inp.candidates] == ["a", "b", "c"]
    assert e5.inp.eligible == ((0, 1), (2,))
    assert e5.choices[1].ranking == ((2, 0.5),)

    reasons = {r.row: (r.kind, r.reason) for r in read_rejects(rej)}
    assert reasons[5] == ("propensity", "missing propensity")
    assert reasons[4][0] == "decision" and "row 5" in reasons[4][1] and "whole" in reasons[4][1]
    assert reasons[7][0] == "duplicate" and "('e4', '1')" in reasons[7][1] and "row 6" in reasons[7][1]
    assert reasons[6][0] == "decision"
    assert reasons[11][0] == "duplicate" and "two slots" in reasons[11][1]
    assert reasons[13][0] == "slot" and "unknown slot format" in reasons[13][1]
    assert reasons[12][0] == "decision"
    assert vw_examples(out) == 3


def test_plain_vw_trains_on_the_output(tmp_path: Path) -> None:
    rows = [f"{i % 50},{'ab'[i % 2]},{'abcd'[i % 4]},0.25,{i % 3},{1714557600 + i}" for i in range(200)]
    src = write_csv(tmp_path / "log.csv", "age,segment,collection,prob,clicked,ts", rows)
    out = tmp_path / "out.json"
    summary = import_log(src, out, build_mapping(None, action="collection", reward="clicked", propensity="prob",
                                                 timestamp="ts", context="user:age,user:segment"))
    assert summary.decisions_written == 200
    assert vw_examples(out) == 200


def test_mapping_file_distribution_and_collection_features(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "log.csv", "age,collection,dist,clicked",
                    ["30,a,a:0.7|b:0.2|c:0.1,1", "31,b,a:0.5|b:0.6,0", "32,c,a:0.5|c:0.5,1"])
    (tmp_path / "collections.csv").write_text("id,kind,price\na,seasonal,0.5\nb,regular,0.25\n")
    (tmp_path / "map.toml").write_text(
        '[import]\naction = "collection"\nreward = "clicked"\ndistribution = "dist"\n'
        'collection_features = "collections.csv"\n[[import.context]]\ncolumn = "age"\ngroup = "user"\n'
        'feature = "years"\nkind = "cat"\n')
    # Flags override the file; an empty reward column name on the flag leaves the file's.
    mapping = build_mapping(tmp_path / "map.toml", reward=None)
    out, rej = tmp_path / "out.json", tmp_path / "rej.csv"
    summary = import_log(src, out, mapping, rejects_path=rej)
    assert summary.decisions_written == 2
    events = list(read_joined([out]))
    first = events[0].decision
    assert dict(first.inp.context[0].features) == {"years": "30"}
    assert dict(first.choices[0].ranking) == {0: 0.7, 1: 0.2, 2: 0.1}
    assert not first.chosen_only  # the full distribution was logged
    assert {c.id: dict(c.groups[0].features) for c in first.inp.candidates if c.groups} == {
        "a": {"kind": "seasonal", "price": 0.5}, "b": {"kind": "regular", "price": 0.25}}
    assert events[1].decision.choices[0].probability == 0.5
    assert [r.row for r in read_rejects(rej)] == [2]
    assert "sums to 1.1" in read_rejects(rej)[0].reason


def test_unusable_input_is_a_mapping_error(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "log.csv", "collection,prob,clicked", ["a,0.5,1"])
    with pytest.raises(MappingError, match="no propensity column"):
        build_mapping(None, action="collection", reward="clicked")
    with pytest.raises(MappingError, match="does not exist"):
        import_log(tmp_path / "nope.csv", tmp_path / "o.json",
                   build_mapping(None, action="collection", reward="clicked", propensity="prob"))
    with pytest.raises(MappingError, match="clicks"):
        import_log(src, tmp_path / "o.json", build_mapping(None, action="collection", reward="clicks",
                                                           propensity="prob"))
    assert not (tmp_path / "o.json").exists()


# --- the command line ----------------------------------------------------------

def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app."""

    app.command("import")(import_command)
    return app


def test_cli_summary_and_exit_codes(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "log.csv", HEADER, SINGLE)
    out, rej = tmp_path / "out.json", tmp_path / "rej.csv"
    runner = CliRunner()
    base = ["import", str(src), "--out", str(out), "--action", "collection", "--reward", "clicked",
            "--timestamp", "ts", "--candidates", "avail", "--context", "user:age,user:segment"]

    ok = runner.invoke(_app(), [*base, "--propensity", "prob", "--rejects", str(rej)])
    assert ok.exit_code == 0, ok.output
    assert re.search(r"rows read\s+│\s+12", ok.output)
    assert re.search(r"decisions written\s+│\s+3", ok.output)
    assert re.search(r"rows rejected\s+│\s+9", ok.output)
    assert "warning: 9 rows rejected" in ok.output
    assert "row 3 (event row-3): missing propensity" in ok.output
    assert len(list(read_joined([out]))) == 3 and len(read_rejects(rej)) == 9

    missing_col = runner.invoke(_app(), [*base, "--propensity", "probability"])
    assert missing_col.exit_code == 2
    assert "probability" in missing_col.output and "column" in missing_col.output

    missing_file = runner.invoke(_app(), ["import", str(tmp_path / "nope.csv"), "--out", str(out),
                                          "--action", "a", "--reward", "r", "--propensity", "p"])
    assert missing_file.exit_code == 2 and "does not exist" in missing_file.output

    bad = write_csv(tmp_path / "bad.csv", "collection,prob,clicked", ["a,2,1", "b,0,1"])
    all_bad = runner.invoke(_app(), ["import", str(bad), "--out", str(tmp_path / "none.json"),
                                     "--action", "collection", "--reward", "clicked", "--propensity", "prob"])
    assert all_bad.exit_code == 2 and "no decision written" in all_bad.output
    assert not (tmp_path / "none.json").exists()

    help_text = runner.invoke(_app(), ["import", "--help"])
    assert help_text.exit_code == 0 and "--rejects" in help_text.output


def test_single_choice_log_is_marked_and_logged_target_is_not_fed_an_invented_distribution(tmp_path: Path) -> None:
    """A log with only the chosen propensity: the DSJSON says so (plain VW still
    trains on it), ``logged`` IPS/SNIPS equal the empirical mean exactly, and
    DM/DR of ``logged`` are refused, naming why; other targets keep DR."""
    import json

    import numpy as np

    from simulator.replay.options import EstimationConfig, ReplayOptions
    from simulator.replay.pipeline import run_replay

    rng = np.random.default_rng(0)
    rows = []
    for i in range(600):
        seg = "ab"[i % 2]
        probs = {"a": 0.6, "b": 0.3, "c": 0.1} if seg == "a" else {"a": 0.2, "b": 0.2, "c": 0.6}
        col = str(rng.choice(list(probs), p=list(probs.values())))
        rows.append(f"{seg},{col},{probs[col]},{int(rng.random() < (0.3 if col == 'c' else 0.1))},{1714557600 + i}")
    src = write_csv(tmp_path / "log.csv", "segment,collection,prob,clicked,ts", rows)
    out = tmp_path / "out.json"
    import_log(src, out, build_mapping(None, action="collection", reward="clicked", propensity="prob",
                                       timestamp="ts", context="user:segment"))
    first = json.loads(out.read_text().splitlines()[0])
    assert first["_p_chosen_only"] is True and len(first["_outcomes"][0]["_a"]) == 1
    assert vw_examples(out) == 600
    from bandit.logformat.events import event_from_record, event_to_record

    decision = next(read_joined([out])).decision
    assert decision.chosen_only and event_from_record(event_to_record(decision)) == decision
    results = run_replay([out], ReplayOptions(policies=("logged", "uniform"), estimation=EstimationConfig(
        estimators=("dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os"), slate=("sips",),
        intervals=("normal",))))
    mean = np.mean([float(r.split(",")[3]) for r in rows])
    logged, uniform = ({e["estimator"]: e for e in p["estimates"]} for p in results["policies"])
    assert logged["ips"]["value"] == pytest.approx(mean, abs=1e-12)
    assert logged["snips"]["value"] == pytest.approx(mean, abs=1e-12)
    assert logged["sips"]["value"] == pytest.approx(mean, abs=1e-12)
    for name in ("dm", "dr", "sndr", "switch-dr", "dr-os"):
        assert logged[name]["refused"] == "unknown_logging_distribution", logged[name]
        assert "only the chosen action's propensity" in logged[name]["detail"]
        assert "value" in uniform[name], uniform[name]  # any other target: only pi/mu at the logged action
    assert results["policies"][0]["diagnostics"]["page_joint"]["effective_sample_size"] == pytest.approx(600)
