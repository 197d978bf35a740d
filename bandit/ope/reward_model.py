"""The reward model behind DM and the DR family: one cross-fitted ridge regression.

q_hat(x, k, a) is a single linear model over

* an intercept, the context tokens, the slot tokens (slot identity, position
  and slot features) and context x slot;
* the collection tokens (collection identity and collection features);
* each of those (context, slot, context x slot) x collection tokens -- who
  and where, crossed with what: VW's default ``CA SA CSA`` interactions;

with the features encoded once, by :mod:`bandit.features` (the namespaces VW
sees). One model for every collection and slot replaces per-collection
buckets, so no collection is treated differently because of how often, or in
which order, it was listed.

Why it does not depend on how a log is listed:

* a candidate's prediction depends on its features, never its index, and the
  training rows only use the chosen candidates, so reordering an event's
  candidates permutes q_hat and changes nothing else;
* training rows are put in a canonical order (a digest of the event's id,
  time, context and rewards) and fold membership is taken from the same
  digest, so rows that share a timestamp may come in any order;
* renaming collections only permutes the model's columns; with the ridge
  penalty the solution is the same up to float rounding (~1e-15).

Solver: the normal equations ``(X'X + alpha I) beta = X'y`` as a sparse
direct solve (SuperLU): no iteration, no tolerance, no random start. The
intercept is not penalised. Predictions are clipped to the observed reward
range (a bounded reward's mean lies in it; clipping never increases squared
error).

Cross-fitting: the decisions are split into ``n_folds`` folds by digest; a
decision's predictions (for all its slots and candidates) come from the model
fit on the other folds, which keeps DR unbiased whatever the model gets wrong.
The same out-of-fold predictions at the logged actions give the model's
held-out quality, reported against a constant (the training folds' mean).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from bandit.logformat.events import JoinedEvent
from bandit.features import context_spaces

Tokens = dict[str, float]


@dataclass(frozen=True)
class RewardModelFit:
    """Out-of-fold q_hat (n, K, A) (0 in padded cells) and its held-out quality."""

    q: np.ndarray
    quality: dict[str, Any]


def _tokens(spaces: dict[str, dict[str, float]]) -> Tokens:
    return {f"{ns}:{name}": float(v) for ns, feats in spaces.items() for name, v in feats.items()}


def _numeric(token: str) -> bool:
    return "=" not in token.partition(":")[2]


def _event_key(joined: JoinedEvent, context: Tokens) -> bytes:
    """What identifies a decision regardless of listing: id, time, context and rewards."""
    d = joined.decision
    text = repr((d.event_id, d.timestamp, sorted(context.items()), joined.rewards))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class _Vocab:
    """Token -> column, in sorted token order (the order never follows the log's)."""

    def __init__(self, tokens: Sequence[str]):
        self.names = sorted(set(tokens))
        self.index = {t: j for j, t in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def matrix(self, rows: Sequence[Tokens], scale: dict[str, float]) -> sp.csr_matrix:
        """Sparse rows (tokens outside the vocabulary dropped), columns sorted."""
        indptr, indices, data = [0], [], []
        for toks in rows:
            cols = sorted((self.index[t], v / scale.get(t, 1.0)) for t, v in toks.items() if t in self.index)
            indices += [c for c, _ in cols]
            data += [v for _, v in cols]
            indptr.append(len(indices))
        return sp.csr_matrix((np.asarray(data, float), np.asarray(indices, np.int64), np.asarray(indptr)),
                             shape=(len(rows), len(self)))


def _rms_scale(rows: Sequence[Tokens]) -> dict[str, float]:
    """Numeric tokens divided by their root mean square (so alpha means the
    same for a price and an age); categorical tokens stay 1."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for toks in rows:
        for t, v in toks.items():
            if _numeric(t):
                sums[t] = sums.get(t, 0.0) + v * v
                counts[t] = counts.get(t, 0) + 1
    return {t: math.sqrt(s / counts[t]) for t, s in sums.items() if s > 0}


def _row_kron(a: sp.csr_matrix, b: sp.csr_matrix) -> sp.csr_matrix:
    """Row-wise Kronecker (face-splitting) product: row j is kron(a_j, b_j)."""
    na, nb = np.diff(a.indptr), np.diff(b.indptr)
    counts = na * nb
    rows = np.repeat(np.arange(a.shape[0]), counts)
    pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    nb_r = np.repeat(nb, counts)
    ia, ib = a.indptr[rows] + pos // np.maximum(nb_r, 1), b.indptr[rows] + pos % np.maximum(nb_r, 1)
    cols = a.indices[ia].astype(np.int64) * b.shape[1] + b.indices[ib]
    out = sp.csr_matrix((a.data[ia] * b.data[ib], (rows, cols)), shape=(a.shape[0], a.shape[1] * b.shape[1]))
    out.sort_indices()
    return out


@dataclass
class _Design:
    """Row side (context+slot per logged slot decision) and the distinct candidates."""

    row_event: np.ndarray  # (m,) event index of each (event, slot) row, canonical order
    row_slot: np.ndarray  # (m,)
    ctx: sp.csr_matrix  # (m, C) context tokens
    slot: sp.csr_matrix  # (m, S) slot tokens
    cand: sp.csr_matrix  # (D, T) distinct candidates' tokens
    cand_of: np.ndarray  # (n, A) distinct-candidate index, -1 where padded

    @cached_property
    def row_side(self) -> sp.csr_matrix:
        """[context | slot | context x slot]: who and where."""
        return sp.hstack([self.ctx, self.slot, _row_kron(self.ctx, self.slot)], format="csr")

    def base(self, rows: np.ndarray) -> sp.csr_matrix:
        """[1 | row side] for ``rows``."""
        return sp.hstack([sp.csr_matrix(np.ones((rows.size, 1))), self.row_side[rows]], format="csr")

    def training(self, rows: np.ndarray, chosen: np.ndarray) -> sp.csr_matrix:
        """Full design rows for ``rows`` with their chosen distinct candidates."""
        v = self.cand[chosen]
        side = self.row_side[rows]
        return sp.hstack([self.base(rows), v, _row_kron(side, v)], format="csr")


def _design(events: Sequence[JoinedEvent], present: np.ndarray, max_context: int) -> tuple[_Design, list[bytes]]:
    n, k_max = present.shape
    contexts = [_tokens(context_spaces(e.decision.inp.context)) for e in events]
    keys = [_event_key(e, c) for e, c in zip(events, contexts)]
    order = sorted(range(n), key=lambda i: keys[i])
    counts: dict[str, int] = {}
    for toks in contexts:
        for t in toks:
            counts[t] = counts.get(t, 0) + 1
    kept = sorted(counts, key=lambda t: (-counts[t], t))[:max_context]
    rows = [(i, k) for i in order for k in range(k_max) if present[i, k]]
    row_event = np.array([i for i, _ in rows], dtype=np.int64)
    row_slot = np.array([k for _, k in rows], dtype=np.int64)
    slot_toks = [_slot_tokens(events[i], k) for i, k in rows]
    ctx_rows = [contexts[i] for i, _ in rows]
    distinct: dict[tuple, int] = {}
    cand_tokens: list[Tokens] = []
    a_max = max(len(e.decision.inp.candidates) for e in events)
    cand_of = np.full((n, a_max), -1, dtype=np.int64)
    for i, e in enumerate(events):
        for a, c in enumerate(e.decision.inp.candidates):
            toks = _tokens(c.spaces())
            key = tuple(sorted(toks.items()))
            if key not in distinct:
                distinct[key] = len(cand_tokens)
                cand_tokens.append(toks)
            cand_of[i, a] = distinct[key]
    # distinct candidates in a listing-free order (by their tokens)
    by_key = sorted(distinct, key=lambda kk: repr(kk))
    renumber = np.empty(len(by_key), dtype=np.int64)
    for new, kk in enumerate(by_key):
        renumber[distinct[kk]] = new
    cand_tokens = [cand_tokens[distinct[kk]] for kk in by_key]
    cand_of = np.where(cand_of >= 0, renumber[np.maximum(cand_of, 0)], -1)
    ctx_vocab, slot_vocab = _Vocab(kept), _Vocab([t for toks in slot_toks for t in toks])
    cand_vocab = _Vocab([t for toks in cand_tokens for t in toks])
    design = _Design(row_event, row_slot, ctx_vocab.matrix(ctx_rows, _rms_scale(contexts)),
                     slot_vocab.matrix(slot_toks, _rms_scale(slot_toks)),
                     cand_vocab.matrix(cand_tokens, _rms_scale(cand_tokens)), cand_of)
    return design, keys


def _slot_tokens(joined: JoinedEvent, k: int) -> Tokens:
    inp = joined.decision.inp
    spec = inp.slots[k] if k < len(inp.slots) else None
    slot_id = joined.decision.choices[k].slot_id
    toks = _tokens(spec.spaces()) if spec is not None and spec.id == slot_id else {}
    toks[f"S:position={k}"] = 1.0  # the position itself, also when slots are named
    toks.setdefault(f"S:id={slot_id}", 1.0)
    return toks


def _ridge(x: sp.csr_matrix, y: np.ndarray, alpha: float) -> np.ndarray:
    """(X'X + alpha I) beta = X'y with the intercept (column 0) unpenalised."""
    penalty = np.full(x.shape[1], alpha)
    penalty[0] = 1e-9 * max(1, x.shape[0])  # keeps the system definite with no data in a column
    gram = (x.T @ x + sp.diags(penalty)).tocsc()
    return np.asarray(spsolve(gram, x.T @ y), dtype=float).reshape(-1)


def _predict(design: _Design, beta: np.ndarray, rows: np.ndarray, lo: float, hi: float,
             chunk: int = 4096) -> np.ndarray:
    """q_hat for every distinct candidate of ``rows``: (len(rows), D)."""
    side_width, t = design.row_side.shape[1], design.cand.shape[1]
    n_base = 1 + side_width
    b_base, b_cand = beta[:n_base], beta[n_base:n_base + t]
    b_cross = beta[n_base + t:].reshape(side_width, t)
    out = np.empty((rows.size, design.cand.shape[0]))
    for start in range(0, rows.size, chunk):
        r = rows[start:start + chunk]
        g = design.base(r) @ b_base
        h = design.row_side[r] @ b_cross + b_cand  # (chunk, T)
        out[start:start + r.size] = g[:, None] + np.asarray(design.cand @ h.T).T
    return np.clip(out, lo, hi)


def fold_of(keys: Sequence[bytes], n_folds: int, seed: int) -> np.ndarray:
    """Fold of each decision from its digest and the seed (no dependence on position)."""
    salt = str(seed).encode()
    return np.array([int.from_bytes(hashlib.blake2b(salt + k, digest_size=8).digest(), "big") % n_folds
                     for k in keys], dtype=np.int64)


def fit_reward_model(events: Sequence[JoinedEvent], action: np.ndarray, reward: np.ndarray, present: np.ndarray,
                     *, n_folds: int = 5, seed: int = 0, alpha: float = 1.0, max_context: int = 64) -> RewardModelFit:
    """Cross-fitted q_hat(x_i, k, a) for every event i, slot k (``present``) and
    candidate a of the event; ``action``/``reward`` (n, K) are the logged ones."""
    n, k_max = present.shape
    design, keys = _design(events, present, max_context)
    a_max = design.cand_of.shape[1]
    q = np.zeros((n, k_max, a_max))
    folds = fold_of(keys, n_folds, seed)
    row_fold = folds[design.row_event]
    chosen = design.cand_of[design.row_event, action[design.row_event, design.row_slot]]
    y = reward[design.row_event, design.row_slot].astype(float)
    oof, const = np.empty(y.size), np.empty(y.size)
    for f in range(n_folds):
        test, train = np.flatnonzero(row_fold == f), np.flatnonzero(row_fold != f)
        if test.size == 0:
            continue
        if train.size == 0:
            const[test] = oof[test] = 0.0
            continue
        lo, hi = float(y[train].min()), float(y[train].max())
        beta = _ridge(design.training(train, chosen[train]), y[train], alpha)
        pred = _predict(design, beta, test, lo, hi)  # (m_test, D)
        ev, sl = design.row_event[test], design.row_slot[test]
        cand = design.cand_of[ev]
        q[ev, sl] = np.where(cand >= 0, np.take_along_axis(pred, np.maximum(cand, 0), axis=1), 0.0)
        oof[test] = pred[np.arange(test.size), chosen[test]]
        const[test] = y[train].mean()
    return RewardModelFit(q, _quality(y, oof, const, design, n_folds, alpha))


def _quality(y: np.ndarray, pred: np.ndarray, const: np.ndarray, design: _Design, n_folds: int,
             alpha: float) -> dict[str, Any]:
    """Held-out (out-of-fold) squared error at the logged actions (the Brier
    score for clicks) against a constant model; ``mse_skill`` > 0 means the
    model predicts better than the mean. (No log loss: a linear model's
    clipped predictions reach 0 and 1, where log loss is unbounded.)"""
    mse, mse_c = float(np.mean((y - pred) ** 2)), float(np.mean((y - const) ** 2))
    out: dict[str, Any] = {"model": "ridge: (1 + context + slot + context x slot) x (1 + collection)",
                           "folds": n_folds, "alpha": alpha, "rows": int(y.size),
                           "context_tokens": int(design.ctx.shape[1]),
                           "collection_tokens": int(design.cand.shape[1]),
                           "heldout_mse": mse, "constant_mse": mse_c,
                           "mse_skill": 1 - mse / mse_c if mse_c > 0 else None}
    return out
