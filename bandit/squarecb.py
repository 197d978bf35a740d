"""SquareCB's distribution over part of a slot's collections, from VW's over all.

VW 9's SquareCB (``--squarecb`` without ``--elim`` or ``--epsilon``) gives
each of a slot's n collections ``1 / (n + gamma * (cost - best cost))`` and the
best one the rest. ``gamma * (cost - best cost)`` is therefore ``1 / p - n``
for every collection, readable from one distribution; and it is all the rule
needs to give the distribution over any subset (what is left once earlier
slots have taken theirs), since a collection's cost does not depend on which
others are offered. So the joint fill predicts each slot once, over all it may
show, instead of once more per slot for what the earlier draws left (2K - 1
predicts became K).

The result is the distribution a multi-slot decision draws from and logs, so
it is exact by construction; that it equals VW's own predict over the subset
(to float32 rounding) is checked by a test against plain pyvw, which is how a
VW upgrade that changes the rule would be noticed.
"""

from __future__ import annotations

import math
from operator import itemgetter
from typing import Collection, Sequence


def excess(pdf: Sequence[tuple[int, float]]) -> dict[int, float]:
    """``gamma * (cost - best cost)`` per collection of VW's SquareCB ``pdf``
    (the best, and float noise below it, at 0; a collection given no mass at
    infinity)."""
    n = len(pdf)
    return {a: _excess(p, n) for a, p in pdf}


def _excess(p: float, n: int) -> float:
    return max(0.0, 1.0 / p - n) if p > 0 else math.inf


def over(pdf: Sequence[tuple[int, float]], allowed: Collection[int]) -> list[tuple[int, float]]:
    """SquareCB's distribution over ``allowed`` (a subset of ``pdf``'s
    collections), by the rule VW applies to the collections it is offered.
    An unusable ``pdf`` (NaN, no mass) stays unusable: NaN for each."""
    total = math.fsum(map(itemgetter(1), pdf))
    if not (math.isfinite(total) and total > 0 and min(map(itemgetter(1), pdf)) >= 0):
        return [(a, math.nan) for a in allowed]
    n = len(pdf)
    gap = [(a, _excess(p, n)) for a, p in pdf if a in allowed]
    if not gap:
        return []
    best, floor = min(gap, key=itemgetter(1))
    m = len(gap)
    out = [(a, 1.0 / (m + g - floor)) for a, g in gap if a != best]
    return [(best, 1.0 - math.fsum(map(itemgetter(1), out))), *out]
