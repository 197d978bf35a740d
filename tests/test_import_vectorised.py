"""`placement import`'s vectorised path writes what the row-level path writes:
the same DSJSON bytes and the same rejection reports, row for row, on files
with every kind of bad cell, CSV and Parquet, over many seeds; and the
column formatters equal the row-level ones they stand in for."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bandit.logformat.tabular as tabular
from bandit.logformat import columnar
from bandit.logformat.events import dumps, iso, read_joined
from bandit.logformat.tabular import build_mapping, import_log
from bandit.logformat.vectorised import iso_millis, json_floats

BAD_CELLS = {  # column -> cells the row-level parser rejects or reads its own way
    "prob": ["", "nan", "0", "1.5", "x", " 0.25", "1e-1", "+0.5", "inf"],
    "clicked": ["", "lots", "inf", "true", "FALSE", "2e6", "-3", " 1 "],
    "ts": ["", "yesterday", "2024-13-01T00:00:00", "2024-05-01 10:00:00+02:00", "1714557600.25", "1e20"],
    "collection": ["", "a b", "é", "-x", "c|d"],
    "pos": ["", "1.5", "x y"],
    "f0": ["", "inf", "nan", "1e39", " 3", "1_0"],
    "c0": ["", "a\x01b", "x" * 300, "Zoë", 'q"uote', "a:b|c"],
}


def _frame(n: int, seed: int, iso_time: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "collection": rng.choice(list("abcdefgh"), n),
        "prob": np.round(rng.uniform(0.01, 1, n), rng.integers(1, 17)).astype(str),
        "clicked": rng.choice(["0", "1", "0.5", "3"], n),
        "pos": rng.choice(["1", "2", "3"], n),
    })
    start = 1714557600 + rng.uniform(-1e5, 1e5, n)
    frame["ts"] = ([iso(t) if i % 2 else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
                    for i, t in enumerate(start)] if iso_time else [repr(float(t)) for t in start])
    for j in range(6):  # numeric: continuous, integral, float32 edge values, some empty
        values = rng.normal(scale=10.0 ** rng.integers(-6, 8), size=n)
        if j == 1:
            values = np.round(values)
        frame[f"f{j}"] = np.where(rng.random(n) < 0.1, "", [repr(float(v)) for v in values])
    for j in range(4):
        frame[f"c{j}"] = np.where(rng.random(n) < 0.1, "", rng.choice(["x", "y z", "w|v", "u:t", "Ärger"], n))
    frame["c3"] = np.where(rng.random(n) < 0.03, "x", rng.integers(0, 5, n).astype(str))  # mapped :num
    for col, cells in BAD_CELLS.items():  # ~3 % of the rows get one odd cell
        rows = rng.choice(n, size=max(1, n // 30), replace=False)
        frame.loc[rows, col] = rng.choice(cells, rows.size)
    return frame


CONTEXT = "user:f0,user:f1,user:f2,user:c0,user:c1,page:f3,page:f4:cat,page:c2,page:c3:num,f5"


def _both(tmp_path: Path, src: Path, chunk_rows: int, **mapping: str | bool) -> tuple[Path, Path]:
    cmap = build_mapping(None, action="collection", reward="clicked", propensity="prob", timestamp="ts",
                         context=CONTEXT, **mapping)
    outs = []
    for vectorised in (True, False):
        out, rej = tmp_path / f"out-{vectorised}.json", tmp_path / f"rej-{vectorised}.csv"
        summary = import_log(src, out, cmap, rejects_path=rej, chunk_rows=chunk_rows, vectorised=vectorised)
        outs.append((out.read_bytes(), rej.read_bytes(), summary.rows_written, summary.rows_rejected,
                     dict(summary.by_kind)))
        assert (summary.rows_vectorised > summary.rows_written // 2) == vectorised
        _copy_is_what_the_log_says(out)
    assert outs[0][0] == outs[1][0]  # the same lines, byte for byte
    assert outs[0][1:] == outs[1][1:]  # the same rejections and counts
    assert outs[0][3] > 0 and outs[0][2] > 0
    return tmp_path / "out-True.json", tmp_path / "rej-True.csv"


def _copy_is_what_the_log_says(out: Path) -> None:
    """The columnar copy import wrote equals the rows read back from the log's lines."""
    copy = columnar.current_copy(out)
    assert copy is not None
    table, skipped = columnar.read_copy(copy)
    assert skipped == []
    assert table.cast(columnar.SCHEMA).equals(columnar.table_from_events(list(read_joined([out]))))


@pytest.fixture
def few_distinct(monkeypatch: pytest.MonkeyPatch) -> None:
    """A low threshold, so small test files also take the high-cardinality column code."""
    monkeypatch.setattr(tabular, "DISTINCT_LIMIT", 8)


@pytest.mark.parametrize("seed", range(4))
def test_csv_same_bytes_as_row_level(tmp_path: Path, seed: int, few_distinct: None) -> None:
    src = tmp_path / "log.csv"
    _frame(900, seed, iso_time=seed % 2 == 1).to_csv(src, index=False)
    _both(tmp_path, src, chunk_rows=250 + 37 * seed, slot="pos" if seed % 2 else "", reward_is_cost=seed == 2)


def test_csv_without_threshold_and_with_event_ids(tmp_path: Path) -> None:
    frame = _frame(600, 7, iso_time=True)
    frame["sid"] = [f"e{i}" for i in range(len(frame))]
    frame.loc[5, "sid"] = "has space"  # unsafe in the fast line: that row goes the row-level way
    frame.loc[9, "sid"] = ""
    src = tmp_path / "log.tsv"
    frame.to_csv(src, index=False, sep="\t")
    _both(tmp_path, src, chunk_rows=200, event="sid", slot="pos")


def test_parquet_typed_columns(tmp_path: Path, few_distinct: None) -> None:
    rng = np.random.default_rng(3)
    n = 700
    frame = pd.DataFrame({
        "collection": rng.integers(1, 9, n),
        "prob": np.where(rng.random(n) < 0.05, np.nan, rng.uniform(0.01, 1.2, n)),
        "clicked": rng.integers(0, 2, n).astype(float),
        "pos": rng.integers(1, 4, n),
        "ts": pd.to_datetime(1714557600 + rng.uniform(0, 1e5, n), unit="s"),
    })
    for j in range(6):
        frame[f"f{j}"] = np.where(rng.random(n) < 0.1, np.nan, rng.normal(scale=100, size=n))
    frame["f1"] = pd.array(np.round(frame["f1"]), dtype="Int64")
    for j in range(4):
        frame[f"c{j}"] = pd.array(rng.choice(["x", "y", None, "3"], n), dtype="string")
    frame["c3"] = pd.array(rng.choice(["1", "2.5", None, "x"], n, p=[0.5, 0.4, 0.07, 0.03]), dtype="string")
    src = tmp_path / "log.parquet"
    frame.to_parquet(src, index=False)
    out, _ = _both(tmp_path, src, chunk_rows=300, slot="pos")
    assert sum(1 for _ in read_joined([out])) > n // 2


def test_multi_row_events_still_import(tmp_path: Path) -> None:
    """Events over several rows are the row-level path's (the fast one declines them)."""
    src = tmp_path / "log.csv"
    src.write_text("sid,pos,collection,prob,clicked,ts\ne1,1,a,0.5,1,0\ne1,2,b,0.5,0,0\ne2,1,a,0.5,1,0\n")
    out = tmp_path / "out.json"
    cmap = build_mapping(None, action="collection", reward="clicked", propensity="prob", timestamp="ts",
                         event="sid", slot="pos")
    assert import_log(src, out, cmap).decisions_written == 2
    assert [len(e.decision.choices) for e in read_joined([out])] == [2, 1]


def test_json_floats_is_what_the_log_writer_writes() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=20000).astype(np.float32).astype(np.float64), rng.normal(size=20000) * 1e5,
                        np.round(rng.normal(size=2000) * 1e4), 10.0 ** rng.uniform(-320, 300, 20000),
                        -(10.0 ** rng.uniform(-20, 20, 20000)),
                        [1e16, 1e17, 1.5e-5, 1e-4, 123456789012345.5, 1e15, -0.0, 0.0, 3.4e38, 1e-7, 2.5e-320,
                         4503599627370495.5, 9.999999999999e12, 1e9, 999999999.5]])
    assert json_floats(x).to_pylist() == [dumps(float(v)) for v in x]  # many distinct: the column code
    few = np.array([0.0, -0.0, 1.0, -1.0, 0.1, 1e-7])
    assert json_floats(few).to_pylist() == [dumps(float(v)) for v in few]  # few distinct: each formatted once


def test_iso_millis_is_iso() -> None:
    rng = np.random.default_rng(1)
    t = np.concatenate([rng.uniform(-1e10, 2e10, 20000), np.round(rng.uniform(0, 2e9, 2000) * 1000) / 1000,
                        np.round(rng.uniform(0, 2e9, 2000) * 1e6) / 1e6 + 0.0005,
                        [0.0, -0.0005, -1.0, 0.9995, 0.9999995, -0.9999995, 1714557600.5]])
    text, ok = iso_millis(t)
    assert ok.all() and text.to_pylist() == [iso(float(v)) for v in t]
