"""Column-at-a-time building blocks for writing log lines without a Python
loop per row (``placement import``'s fast path).

Each function reproduces, for a whole column, exactly what the row-at-a-time
code produces for one value: :func:`json_floats` is the log writer's JSON
text of a float (:func:`bandit.logformat.events.dumps`), :func:`iso_millis` is
:func:`bandit.logformat.events.iso`, :func:`by_distinct` runs a row-level
function once per distinct cell and spreads the answers back. Where a fast
formula could disagree with the row-level one (a float printed in exponent
form by one and not the other), the few such values go through the row-level
code instead, so the output is the same byte for byte (tests check both
against the row-level code on random and edge values).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from bandit.logformat.events import EPOCH_RANGE

# Strict decimal numbers: what both Python's float() and Arrow's cast read the same way.
NUMBER_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
# Where Arrow's shortest round-trip text is the log writer's (a plain decimal, not integral).
_PLAIN_LOW, _PLAIN_HIGH = 1e-4, 1e9


def json_float(value: float) -> str:
    """The JSON text the log writer (:func:`bandit.logformat.events.dumps`,
    orjson) writes for a finite float."""
    return orjson.dumps(float(value)).decode()


def json_floats(values: np.ndarray) -> pa.Array:
    """:func:`json_float` of each value, as an Arrow string array."""
    x = np.asarray(values, dtype=np.float64)
    negative_zero = (x == 0) & np.signbit(x)  # np.unique would merge -0.0 into 0.0
    if pc.count_distinct(pa.array(x)).as_py() <= max(1024, x.size // 8):  # few distinct values: format each once
        uniq, inverse = np.unique(np.where(negative_zero, np.nan, x), return_inverse=True)
        text = ["-0.0" if v != v else json_float(v) for v in uniq]  # NaN stands for -0.0 here
        return pa.array(text, pa.string()).take(pa.array(inverse.ravel()))
    out = pc.cast(pa.array(x), pa.string())
    integral = (np.floor(x) == x) & (np.abs(x) < 1e16) & ~((x == 0) & np.signbit(x))
    if integral.any():
        ints = pc.binary_join_element_wise(pc.cast(pa.array(np.where(integral, x, 0).astype(np.int64)), pa.string()),
                                           ".0", "")
        out = pc.if_else(pa.array(integral), ints, out)
    ax = np.abs(x)
    odd = ~integral & ~((ax >= _PLAIN_LOW) & (ax < _PLAIN_HIGH))
    if odd.any():
        rows = np.flatnonzero(odd)
        out = pc.replace_with_mask(out, pa.array(odd), pa.array([json_float(v) for v in x[rows]], pa.string()))
    return out


def millis(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Epoch milliseconds :func:`bandit.logformat.events.iso` writes for each
    time (rounded to microseconds, as ``datetime`` does, then truncated), and
    where it can (years 1..9999). ``ms * 1000 / 1e6`` is then what
    :func:`bandit.logformat.events.parse_iso` reads back."""
    t = np.asarray(ts, dtype=np.float64)
    ok = np.isfinite(t) & (t > EPOCH_RANGE[0]) & (t < EPOCH_RANGE[1])
    safe = np.where(ok, t, 0.0)
    whole = np.floor(safe)
    us = np.round((safe - whole) * 1e6)  # half to even, as datetime.fromtimestamp rounds
    return whole.astype(np.int64) * 1000 + (us.astype(np.int64) // 1000), ok


def iso_millis(ts: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """:func:`bandit.logformat.events.iso` of each epoch time (UTC, truncated to
    milliseconds after rounding to microseconds, as ``datetime`` does) and a
    mask of the values it can write (years 1..9999)."""
    ms, ok = millis(ts)
    day, rest = np.divmod(ms, 86_400_000)
    days, which = np.unique(day, return_inverse=True)  # a log spans few days: format each date once
    dates = pc.strftime(pa.array(days * 86_400_000, pa.timestamp("ms", tz="UTC")), format="%Y-%m-%dT")
    parts = [dates.take(pa.array(which.ravel()))]
    for unit, width, sep in ((3_600_000, 2, ":"), (60_000, 2, ":"), (1000, 2, "."), (1, 3, "Z")):
        count, rest = np.divmod(rest, unit)
        parts += [pc.utf8_lpad(pc.cast(pa.array(count), pa.string()), width, "0"), sep]
    return pc.binary_join_element_wise(*parts, ""), ok


def strict_numbers(cells: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok) for a string column: ok where the cell is a finite number
    Arrow reads (all cells, or else those of the plain decimal form after
    trimming spaces), which Python's float() reads to the same double; other
    cells are left to the row-level parser."""
    try:  # the common case: Arrow reads every cell (what it reads, float() reads the same)
        values = np.asarray(numpy_of(pc.cast(cells, pa.float64()), np.nan), dtype=np.float64)
        return values, mask_of(cells.is_valid()) & np.isfinite(values)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    text = pc.utf8_trim_whitespace(cells)
    ok = pc.fill_null(pc.match_substring_regex(text, NUMBER_PATTERN), False)
    values = numpy_of(pc.cast(pc.if_else(ok, text, "0"), pa.float64()))
    return np.asarray(values, dtype=np.float64), mask_of(ok)


def by_distinct(column: pa.Array, fn: Callable[[Any], Any]) -> tuple[list[Any], np.ndarray]:
    """``fn`` applied once per distinct cell: (answers, code of each row).

    ``fn`` returns a value or raises; a raising cell's answer is the
    exception (the caller sends those rows to the row-level code)."""
    encoded = pc.dictionary_encode(column, null_encoding="encode")
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    answers = []
    for value in encoded.dictionary.to_pylist():
        try:
            answers.append(fn(value))
        except Exception as exc:  # the row-level parser's error: that row goes the slow way
            answers.append(exc)
    return answers, numpy_of(encoded.indices).astype(np.int64)  # nulls are a dictionary entry


def numpy_of(column: pa.Array, fill: Any = 0) -> np.ndarray:
    """A numeric column as numpy, nulls as ``fill`` (Arrow's own conversion
    of a column with a validity bitmap goes through Python objects: slow)."""
    if column.null_count:
        column = pc.fill_null(column, fill)
    return column.to_numpy(zero_copy_only=False)


def mask_of(column: pa.Array) -> np.ndarray:
    """A boolean column as a numpy mask (nulls False)."""
    return np.asarray(numpy_of(column, False), dtype=bool)


def good(answers: Sequence[Any], codes: np.ndarray) -> np.ndarray:
    """Rows whose distinct-cell answer is not an exception."""
    bad = np.array([isinstance(a, Exception) for a in answers] + [True], dtype=bool)
    return ~bad[codes]


def strings(answers: Sequence[Any], codes: np.ndarray, text: Callable[[Any], str | None] = str) -> pa.Array:
    """The string ``text(answer)`` of each row (null where it is None or an exception)."""
    table = pa.array([None if isinstance(a, Exception) else text(a) for a in answers], pa.string())
    return table.take(pa.array(codes))


def floats(answers: Sequence[Any], codes: np.ndarray) -> np.ndarray:
    """The float answer of each row (NaN where the answer is an exception)."""
    table = np.array([np.nan if isinstance(a, Exception) else float(a) for a in answers] + [np.nan])
    return table[codes]


def lines_bytes(lines: pa.Array) -> memoryview:
    """The concatenated text of a string array (its data buffer, no copy)."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    lines = lines.drop_null() if lines.null_count else lines
    if len(lines) == 0:
        return memoryview(b"")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64 if pa.types.is_large_string(lines.type) else np.int32,
                            count=len(lines) + 1, offset=lines.offset * (8 if pa.types.is_large_string(lines.type) else 4))
    data = lines.buffers()[2]
    return memoryview(data)[int(offsets[0]):int(offsets[-1])]
