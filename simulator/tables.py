"""Terminal tables that fit the width they are printed at, without cutting a
number or a name.

Rich shrinks a table wider than the console by truncating cells (``seaso…``,
``0.00…``), which in a CI log or a pipe (80 columns) loses exactly what the
table is for. :func:`fitted` instead splits the value columns over as many
tables as needed, each repeating the key columns (scenario, policy, ...), and
replaces a key too long to fit by a short label (``P1``) explained in a
legend printed below it in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

CELL_PAD = 3  # a rich column's padding and border
KEY_MAX = 28  # a key cell longer than this is abbreviated when the table does not fit


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"  # left | right
    key: bool = False  # repeated in every part, abbreviated when too long
    abbreviation: str = ""  # prefix of the short labels of this key column (e.g. "P")


def _width(column: Column, cells: Sequence[str]) -> int:
    return max([len(column.header), *(len(c) for c in cells)]) + CELL_PAD  # headers are not wrapped either


def _abbreviate(columns: Sequence[Column], rows: list[list[str]]) -> list[str]:
    """Long key cells -> short labels, in place; returns the legend lines."""
    legend: list[str] = []
    for j, col in enumerate(columns):
        if not col.key:
            continue
        labels: dict[str, str] = {}
        for row in rows:
            cell = row[j]
            if len(cell) > KEY_MAX:
                if cell not in labels:
                    labels[cell] = f"{col.abbreviation or col.header[:1].upper()}{len(labels) + 1}"
                    legend.append(f"{labels[cell]} = {cell}")
                row[j] = labels[cell]
    return legend


def _parts(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[list[int]]:
    """Groups of column indices (keys first in each) that fit in ``width``."""
    widths = [_width(c, [r[j] for r in rows]) for j, c in enumerate(columns)]
    keys = [j for j, c in enumerate(columns) if c.key]
    base = 1 + sum(widths[j] for j in keys)
    parts: list[list[int]] = []
    current: list[int] = []
    used = base
    for j, col in enumerate(columns):
        if col.key:
            continue
        if current and used + widths[j] > width:
            parts.append(keys + current)
            current, used = [], base
        current.append(j)
        used += widths[j]
    if current or not parts:
        parts.append(keys + current)
    return parts


def fitted(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]],
           width: int) -> list[RenderableType]:
    """The table as one or more rich tables (and a legend) no wider than ``width``."""
    cells = [list(map(str, r)) for r in rows]
    legend: list[str] = []
    parts = _parts(columns, cells, width)
    if len(parts) > 1 or _total(columns, cells) > width:
        legend = _abbreviate(columns, cells)
        parts = _parts(columns, cells, width)
    out: list[RenderableType] = []
    for n, part in enumerate(parts, start=1):
        suffix = f" ({n}/{len(parts)})" if len(parts) > 1 else ""
        table = Table(title=title + suffix)
        for j in part:
            col = columns[j]
            table.add_column(col.header, justify=col.justify,  # type: ignore[arg-type]
                             no_wrap=True, min_width=_width(col, [r[j] for r in cells]) - CELL_PAD)
        for row in cells:
            table.add_row(*(Text(row[j]) for j in part))  # cells are text, never markup
        out.append(table)
    out.extend(Text(line, no_wrap=False, overflow="fold") for line in legend)
    return out


def _total(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> int:
    return 1 + sum(_width(c, [r[j] for r in rows]) for j, c in enumerate(columns))
