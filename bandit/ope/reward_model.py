"""The reward model behind DM and the DR family: one cross-fitted ridge regression.

q_hat(x, k, a) is a single linear model over every product of

* the context tokens (with an intercept),
* the slot tokens (slot identity, position and slot features, with an intercept),
* the collection tokens (collection identity and features, with an intercept):

that is an intercept, context, slot, context x slot -- who and where -- each
alone and crossed with what: VW's default ``CA SA CSA`` interactions. The
features are the ones VW sees (:mod:`bandit.features`), read from the log's
columnar copy (:mod:`bandit.logformat.columnar`) as :class:`RewardInputs`.
One model for every collection and slot replaces per-collection buckets, so
no collection is treated differently because of how often, or in which
order, it was listed.

Why it does not depend on how a log is listed:

* a candidate's prediction depends on its features, never its index, and the
  training rows only use the chosen candidates, so reordering an event's
  candidates permutes q_hat and changes nothing else;
* training rows are put in a canonical order (a 64-bit digest of the event's
  id and time) and fold membership is taken from the same digest, so rows
  that share a timestamp may come in any order;
* renaming collections only permutes the model's columns; with the ridge
  penalty the solution is the same up to float rounding (~1e-15).

Solver: the normal equations ``(X'X + alpha I) beta = X'y`` as a sparse
direct solve (SuperLU): no iteration, no tolerance, no random start. The
intercept is not penalised. Predictions are clipped to the observed reward
range (a bounded reward's mean lies in it; clipping never increases squared
error).

Scale: a row's design vector is ``c (x) s (x) u`` (context, slot, collection,
each with its intercept), so ``X'X`` is the sum over rows of
``c c' (x) z z'`` with ``z = s (x) u``. Where a log has few distinct (slot,
chosen collection) pairs -- every catalog-based or imported log -- ``z`` is
the same for all rows of a pair and ``X'X`` is assembled from one small dense
context Gram matrix per pair and fold, a pass over the rows at BLAS speed
(the whole model at 10M decisions: 49 CPU-seconds, BENCHMARKS.md).
Collections whose features vary per request make nearly every row its own
pair; then ``X`` is built row by row as a sparse matrix (the same normal
equations).

Cross-fitting: the decisions are split into ``n_folds`` folds by digest; a
decision's predictions (for all its slots and candidates) come from the model
fit on the other folds, which keeps DR unbiased whatever the model gets wrong.
The same out-of-fold predictions at the logged actions give the model's
held-out quality, reported against a constant (the training folds' mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

Tokens = dict[str, float]

# The grouped path needs few (slot, chosen collection) pairs, each with many
# rows; otherwise (collections with per-request features make nearly every
# row its own pair) the design is built row by row.
GROUP_LIMIT = 4096
MIN_GROUP_ROWS = 8  # rows per pair on average, below which a dense Gram matrix per pair costs more than it saves
_CHUNK_ROWS = 1 << 18


@dataclass(frozen=True)
class RewardInputs:
    """What the reward model reads of a log, decisions in the log's time order.

    ``context`` holds each decision's raw context features (columns
    ``context_names``, sorted); ``slot_of[i, j]`` indexes ``slots`` with the
    features of decision i's j-th choice (-1: no such choice);
    ``candidate_of[i, a]`` indexes ``candidates`` (distinct feature sets, in a
    listing-free order) with the features of its a-th candidate (-1: padded);
    ``key`` is each decision's digest (:func:`decision_keys`)."""

    key: np.ndarray
    context: sp.csr_matrix
    context_names: list[str]
    slot_of: np.ndarray
    slots: list[Tokens]
    candidate_of: np.ndarray
    candidates: list[Tokens]


@dataclass(frozen=True)
class RewardModelFit:
    """Out-of-fold q_hat (n, J, A) by choice order (0 in padded cells) and its held-out quality."""

    q: np.ndarray
    quality: dict[str, Any]


_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        z = x + _GOLD
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def decision_keys(offsets: np.ndarray, data: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """A 64-bit digest of each decision's id (UTF-8 bytes ``data[offsets[i]:
    offsets[i+1]]``, FNV-1a) and time: what identifies a decision whatever
    the order it is listed in. Vectorised over byte positions."""
    offsets = np.asarray(offsets, dtype=np.int64)
    length = np.diff(offsets)
    h = np.full(length.size, _FNV_OFFSET, dtype=np.uint64)
    data = np.asarray(data, dtype=np.uint8)
    with np.errstate(over="ignore"):
        for p in range(int(length.max()) if length.size else 0):
            rows = np.flatnonzero(length > p)
            h[rows] = (h[rows] ^ data[offsets[rows] + p].astype(np.uint64)) * _FNV_PRIME
    stamp = np.ascontiguousarray(np.asarray(timestamps, dtype=np.float64)).view(np.uint64)
    return _mix(h ^ _mix(stamp))


def fold_of(keys: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each decision from its digest and the seed (no dependence on position)."""
    salt = _mix(np.array([seed], dtype=np.uint64))[0]
    return (_mix(keys ^ salt) % np.uint64(n_folds)).astype(np.int64)


def _numeric(token: str) -> bool:
    return "=" not in token.partition(":")[2]


class _Vocab:
    """Token -> column, in sorted token order (the order never follows the log's)."""

    def __init__(self, tokens: Sequence[str]):
        self.names = sorted(set(tokens))
        self.index = {t: j for j, t in enumerate(self.names)}

    def vectors(self, sets: Sequence[Tokens], scale: dict[str, float]) -> np.ndarray:
        """Dense rows ``[1 | tokens / scale]`` of each token set."""
        out = np.zeros((len(sets), 1 + len(self.names)))
        out[:, 0] = 1.0
        for r, toks in enumerate(sets):
            for t, v in toks.items():
                if t in self.index:
                    out[r, 1 + self.index[t]] = v / scale.get(t, 1.0)
        return out


def _rms_scale(sets: Sequence[Tokens], weight: np.ndarray) -> dict[str, float]:
    """Numeric tokens divided by their root mean square over the sets (each
    counted ``weight`` times), so alpha means the same for a price and an
    age; categorical tokens stay 1."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for toks, w in zip(sets, weight.tolist()):
        for t, v in toks.items():
            if _numeric(t) and w:
                sums[t] = sums.get(t, 0.0) + w * v * v
                counts[t] = counts.get(t, 0.0) + w
    return {t: float(np.sqrt(s / counts[t])) for t, s in sums.items() if s > 0}


@dataclass
class _Design:
    """The three factors of every design row and the training rows."""

    ctx: sp.csr_matrix  # (n, 1 + C): [1 | kept context tokens, scaled], per decision
    slot: np.ndarray  # (slot sets, 1 + S)
    cand: np.ndarray  # (distinct candidates, 1 + T)
    row_event: np.ndarray  # (m,) canonical order
    row_choice: np.ndarray  # (m,)
    row_slot: np.ndarray  # (m,) slot set of each row
    row_chosen: np.ndarray  # (m,) distinct candidate chosen

    @property
    def context_tokens(self) -> int:
        return self.ctx.shape[1] - 1

    @property
    def collection_tokens(self) -> int:
        return self.cand.shape[1] - 1

    @property
    def width(self) -> int:
        return self.ctx.shape[1] * self.slot.shape[1] * self.cand.shape[1]

    def z(self, slot: int, cand: int) -> np.ndarray:
        """``s (x) u`` of one (slot set, candidate)."""
        return np.kron(self.slot[slot], self.cand[cand])


def _context_matrix(inputs: RewardInputs, max_context: int) -> sp.csr_matrix:
    """``[1 | the max_context most frequent tokens, scaled]`` per decision."""
    ctx = inputs.context
    counts = np.bincount(ctx.indices, minlength=ctx.shape[1])
    names = inputs.context_names
    kept = sorted(sorted(range(len(names)), key=lambda j: (-counts[j], names[j]))[:max_context],
                  key=lambda j: names[j])
    squares = np.bincount(ctx.indices, weights=ctx.data * ctx.data, minlength=ctx.shape[1])
    scale = np.array([np.sqrt(squares[j] / counts[j]) if _numeric(names[j]) and squares[j] > 0 else 1.0
                      for j in kept])
    sub = ctx[:, kept] @ sp.diags(1.0 / scale) if kept else sp.csr_matrix((ctx.shape[0], 0))
    ones = sp.csr_matrix(np.ones((ctx.shape[0], 1)))
    return sp.hstack([ones, sub], format="csr")


def _design(inputs: RewardInputs, action: np.ndarray, present: np.ndarray, max_context: int) -> _Design:
    ctx = _context_matrix(inputs, max_context)
    order = np.argsort(inputs.key, kind="stable")
    ev, ch = np.nonzero(present[order])
    row_event, row_choice = order[ev], ch
    row_slot = inputs.slot_of[row_event, row_choice]
    row_chosen = inputs.candidate_of[row_event, action[row_event, row_choice]]
    slot_weight = np.bincount(row_slot, minlength=len(inputs.slots))
    slot_vocab = _Vocab([t for toks in inputs.slots for t in toks])
    cand_vocab = _Vocab([t for toks in inputs.candidates for t in toks])
    slot = slot_vocab.vectors(inputs.slots, _rms_scale(inputs.slots, slot_weight))
    cand = cand_vocab.vectors(inputs.candidates,
                              _rms_scale(inputs.candidates, np.ones(len(inputs.candidates))))
    return _Design(ctx, slot, cand, row_event, row_choice, row_slot, row_chosen)


class _Statistics:
    """Per fold, the normal equations' pieces of its rows: by (slot set,
    chosen candidate) group a dense context Gram matrix, or (many groups)
    the sparse design rows themselves."""

    def __init__(self, design: _Design, y: np.ndarray, folds: np.ndarray, n_folds: int, grouped: bool | None):
        self.d, self.y, self.n_folds = design, y, n_folds
        self.row_fold = folds[design.row_event]
        group = design.row_slot * design.cand.shape[0] + design.row_chosen
        self.groups, self.row_group = np.unique(group, return_inverse=True)
        if grouped is None:
            grouped = self.groups.size <= min(GROUP_LIMIT, y.size / MIN_GROUP_ROWS)
        self.grouped = grouped
        if self.grouped:
            self._gram_by_group()

    def _gram_by_group(self) -> None:
        d, width = self.d, self.d.ctx.shape[1]
        g_n = self.groups.size
        self.gram = np.zeros((self.n_folds, g_n, width, width))
        self.moment = np.zeros((self.n_folds, g_n, width))
        key = self.row_group * self.n_folds + self.row_fold
        order = np.argsort(key, kind="stable")  # canonical order within each (group, fold)
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        for run in np.split(order, bounds) if order.size else ():
            g, f = int(self.row_group[run[0]]), int(self.row_fold[run[0]])
            for start in range(0, run.size, _CHUNK_ROWS):
                rows = run[start:start + _CHUNK_ROWS]
                c = d.ctx[d.row_event[rows]]
                self.gram[f, g] += (c.T @ c).toarray()
                self.moment[f, g] += c.T @ self.y[rows]

    def normal_equations(self, fold: int, alpha: float) -> tuple[sp.csc_matrix, np.ndarray]:
        """``X'X + penalty`` and ``X'y`` over the rows outside ``fold``."""
        d = self.d
        if self.grouped:
            keep = np.arange(self.n_folds) != fold
            parts, rhs = [], np.zeros(d.width)
            for g, code in enumerate(self.groups.tolist()):
                z = d.z(code // d.cand.shape[0], code % d.cand.shape[0])
                zs = sp.csr_matrix(z[None, :])
                gram = self.gram[keep, g].sum(axis=0)
                parts.append(sp.kron(sp.csr_matrix(gram), zs.T @ zs, format="coo"))
                rhs += np.kron(self.moment[keep, g].sum(axis=0), z)
            xtx = sp.coo_matrix((np.concatenate([p.data for p in parts]),
                                 (np.concatenate([p.row for p in parts]), np.concatenate([p.col for p in parts]))),
                                shape=(d.width, d.width)).tocsr()
        else:
            rows = np.flatnonzero(self.row_fold != fold)
            x = self.rows(rows)
            xtx, rhs = (x.T @ x).tocsr(), x.T @ self.y[rows]
        penalty = np.full(d.width, alpha)
        penalty[0] = 1e-9 * max(1, int((self.row_fold != fold).sum()))  # definite with no data in a column
        return (xtx + sp.diags(penalty)).tocsc(), np.asarray(rhs, dtype=float)

    def rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """Sparse design rows ``c (x) s (x) u`` (the many-groups path)."""
        d = self.d
        z = _row_kron(sp.csr_matrix(d.slot)[d.row_slot[rows]], sp.csr_matrix(d.cand)[d.row_chosen[rows]])
        return _row_kron(d.ctx[d.row_event[rows]], z)


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


def _predict(design: _Design, beta: np.ndarray, rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Unclipped q_hat of design ``rows`` for their ``candidates`` (distinct-
    candidate indices, (len(rows), A), -1 padded: 0 there).

    With beta as a (context, slot, collection) tensor, a row's prediction for
    candidate u is ``g' u`` with ``g = c' H_s``, where ``H_s`` contracts beta
    with the row's slot vector: one (context x collection) matrix per slot
    set, and each row scores only its own candidates (however many distinct
    candidates the log has, e.g. collections with per-request features)."""
    d = design
    b = beta.reshape(d.ctx.shape[1], d.slot.shape[1], d.cand.shape[1])
    out = np.zeros(candidates.shape)
    slot_of = d.row_slot[rows]
    step = max(1, 4_000_000 // max(1, candidates.shape[1] * d.cand.shape[1]))
    for s in np.unique(slot_of).tolist():
        h_s = np.einsum("jst,s->jt", b, d.slot[s])  # (1 + C, 1 + T)
        where = np.flatnonzero(slot_of == s)
        for start in range(0, where.size, step):
            part = where[start:start + step]
            g = np.asarray(d.ctx[d.row_event[rows[part]]] @ h_s)  # (p, 1 + T)
            cand = candidates[part]
            score = np.einsum("pt,pat->pa", g, d.cand[np.maximum(cand, 0)])
            out[part] = np.where(cand >= 0, score, 0.0)
    return out


def fit_reward_model(inputs: RewardInputs, action: np.ndarray, reward: np.ndarray, present: np.ndarray,
                     *, n_folds: int = 5, seed: int = 0, alpha: float = 1.0, max_context: int = 64,
                     grouped: bool | None = None) -> RewardModelFit:
    """Cross-fitted q_hat(x_i, j, a) for every decision i, choice j
    (``present``) and candidate a; ``action``/``reward`` (n, J) are the
    logged ones by choice. ``grouped`` forces a path (default: the grouped
    one when its pairs are few and well filled, see the module's
    docstring); both solve the same equations."""
    n, j_max = present.shape
    design = _design(inputs, action, present, max_context)
    a_max = inputs.candidate_of.shape[1]
    q = np.zeros((n, j_max, a_max))
    folds = fold_of(inputs.key, n_folds, seed)
    y = reward[design.row_event, design.row_choice].astype(float)
    stats = _Statistics(design, y, folds, n_folds, grouped)
    oof, const = np.empty(y.size), np.empty(y.size)
    for f in range(n_folds):
        test, train = np.flatnonzero(stats.row_fold == f), np.flatnonzero(stats.row_fold != f)
        if test.size == 0:
            continue
        if train.size == 0:
            const[test] = oof[test] = 0.0
            continue
        lo, hi = float(y[train].min()), float(y[train].max())
        gram, rhs = stats.normal_equations(f, alpha)
        beta = np.asarray(spsolve(gram, rhs), dtype=float).reshape(-1)
        ev, ch = design.row_event[test], design.row_choice[test]
        cand = inputs.candidate_of[ev]  # (m_test, A)
        q[ev, ch] = np.where(cand >= 0, np.clip(_predict(design, beta, test, cand), lo, hi), 0.0)
        oof[test] = np.clip(_predict(design, beta, test, design.row_chosen[test][:, None]), lo, hi)[:, 0]
        const[test] = y[train].mean()
    return RewardModelFit(q, _quality(y, oof, const, design, n_folds, alpha, stats.grouped))


def _quality(y: np.ndarray, pred: np.ndarray, const: np.ndarray, design: _Design, n_folds: int,
             alpha: float, grouped: bool) -> dict[str, Any]:
    """Held-out (out-of-fold) squared error at the logged actions (the Brier
    score for clicks) against a constant model; ``mse_skill`` > 0 means the
    model predicts better than the mean. (No log loss: a linear model's
    clipped predictions reach 0 and 1, where log loss is unbounded.)"""
    mse, mse_c = float(np.mean((y - pred) ** 2)), float(np.mean((y - const) ** 2))
    return {"model": "ridge: (1 + context) x (1 + slot) x (1 + collection)",
            "folds": n_folds, "alpha": alpha, "rows": int(y.size),
            "context_tokens": design.context_tokens, "collection_tokens": design.collection_tokens,
            "path": "grouped" if grouped else "row by row",
            "heldout_mse": mse, "constant_mse": mse_c,
            "mse_skill": 1 - mse / mse_c if mse_c > 0 else None}
