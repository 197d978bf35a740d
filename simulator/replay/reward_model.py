"""The reward model q_hat(x, k, a) that DM and the DR family lean on."""

from __future__ import annotations

from collections import Counter

import numpy as np

from bandit.logformat.events import JoinedEvent
from bandit.ope.estimators import cross_fit_rewards
from simulator.replay.logarrays import ReplayLog


def context_tokens(joined: JoinedEvent) -> dict[str, float]:
    """Context features as tokens: ``group.name=value`` (1.0) or ``group.name`` (number)."""
    out: dict[str, float] = {}
    for group in joined.decision.inp.context:
        for name, value in group.features.items():
            if isinstance(value, str):
                out[f"{group.name}.{name}={value}"] = 1.0
            else:
                out[f"{group.name}.{name}"] = float(value)
    return out


def reward_model(log: ReplayLog, seed: int = 0, n_folds: int = 5, max_context: int = 30,
                 max_collections: int = 40) -> np.ndarray:
    """Cross-fitted q_hat(x_i, a) as (n, K, A), one ridge model per slot position.

    Design: per collection (the ``max_collections`` most frequent by id; the
    rest share one bucket) a linear model on [context tokens, 1] -- i.e. the
    interactions collection x context, and, being per slot, x slot. The most
    frequent ``max_context`` tokens are kept. Out-of-fold predictions keep
    DR's correction unbiased; memory is O(n * collections * tokens).
    """
    n, k_max, a_max = log.shape
    token_lists = [context_tokens(e) for e in log.events]
    vocab = [t for t, _ in Counter(t for toks in token_lists for t in toks).most_common(max_context)]
    index = {t: j for j, t in enumerate(vocab)}
    x = np.zeros((n, len(vocab)))
    for i, toks in enumerate(token_lists):
        for t, v in toks.items():
            if t in index:
                x[i, index[t]] = v
    ids = Counter(c.id for e in log.events for c in e.decision.inp.candidates)
    coll = {cid: j for j, (cid, _) in enumerate(ids.most_common(max_collections))}
    other = len(coll)
    glob = np.zeros((n, a_max), dtype=np.int64)
    for i, e in enumerate(log.events):
        for a, c in enumerate(e.decision.inp.candidates):
            glob[i, a] = coll.get(c.id, other)
    q = np.zeros((n, k_max, a_max))
    for k in range(k_max):
        rows = np.flatnonzero(log.present[:, k])
        y = log.reward[rows, k]
        if rows.size < 4:
            q[rows, k] = y.mean() if rows.size else 0.0
            continue
        fit = cross_fit_rewards(x[rows], glob[rows, log.action[rows, k]], y, n_actions=other + 1,
                                n_folds=min(n_folds, rows.size), seed=seed)
        q[rows, k] = np.take_along_axis(fit.estimated_rewards, glob[rows], axis=1)
    return q

