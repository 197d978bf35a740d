"""The best whole assignment of collections to slots, given their values.

What the oracle serves and what regret is measured against: one collection
per slot, never the same one twice, only where the slot walk allows it. Solved
exactly as a linear assignment; slots ``< first`` are fixed at ``taken``.
"""

from __future__ import annotations

from typing import Collection

import numpy as np

from bandit.decision import DecisionInput

_EXCLUDED = -1e9  # far below any value: never chosen while anything else is left


def best_assignment(inp: DecisionInput, value: np.ndarray, first: int = 0,
                    taken: Collection[int] = ()) -> list[int]:
    """Candidate index per slot ``first..K-1`` maximising the summed ``value``
    (shape slots x candidates), each slot limited to what it may show."""
    from scipy.optimize import linear_sum_assignment  # loaded when first needed (CLI start-up)

    masked = np.full_like(value[first:], _EXCLUDED, dtype=float)
    for k in range(first, len(inp.slots)):
        allowed = inp.allowed(k)
        if isinstance(allowed, range) and len(allowed) == value.shape[1]:
            masked[k - first] = value[k]
        else:
            masked[k - first, list(allowed)] = value[k, list(allowed)]
    if taken:
        masked[:, list(taken)] = _EXCLUDED
    rows, cols = linear_sum_assignment(masked, maximize=True)
    out = [0] * len(rows)
    for r, c in zip(rows.tolist(), cols.tolist()):
        out[r] = c
    return out
