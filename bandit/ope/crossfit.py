"""Cross-fitting on plain arrays (features, action, reward): out-of-fold
ridge predictions, so a round's prediction never comes from a model fitted on
it. The replay's reward model is :mod:`bandit.ope.reward_model`; this is the
array-level tool for obp-style use and its tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike

from bandit.ope.estimate import FloatArray, IntArray

# --------------------------------------------------------------------------- cross-fitting

Fit = Callable[[FloatArray, FloatArray], Any]
Predict = Callable[[Any, FloatArray], FloatArray]


def interaction_design(features: ArrayLike, action: ArrayLike, n_actions: int) -> FloatArray:
    """Design rows phi(x, a) for a ridge reward model.

    features (m, d): one-hot(a) (x) [x, 1] -- a separate linear model per action.
    features (m, A, d) per-action: [x_a, one-hot(a)] -- shared slope, per-action bias.
    """
    x = np.asarray(features, dtype=float)
    a = np.asarray(action, dtype=np.int64)
    rows = np.arange(a.size)
    if x.ndim == 2:
        xb = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
        out = np.zeros((x.shape[0], n_actions, xb.shape[1]))
        out[rows, a] = xb
        return out.reshape(x.shape[0], -1)
    if x.ndim == 3:
        return np.concatenate([x[rows, a], np.eye(n_actions)[a]], axis=1)
    raise ValueError("features must be (n, d) or (n, A, d)")


def ridge_fit(design: FloatArray, target: FloatArray, alpha: float = 1.0) -> FloatArray:
    """Ridge coefficients solving (X'X + alpha I) beta = X'y."""
    gram = design.T @ design + alpha * np.eye(design.shape[1])
    return np.linalg.solve(gram, design.T @ target)


def ridge_predict(beta: FloatArray, design: FloatArray) -> FloatArray:
    return design @ beta


@dataclass(frozen=True)
class CrossFit:
    """Out-of-fold reward predictions: estimated_rewards[i] comes from a model
    fit without fold[i]."""

    estimated_rewards: FloatArray  # (n, A)
    fold: IntArray  # (n,)


def cross_fit_rewards(
    features: ArrayLike,
    action: ArrayLike,
    reward: ArrayLike,
    *,
    n_actions: int | None = None,
    n_folds: int = 5,
    seed: int = 0,
    fit: Fit = ridge_fit,
    predict: Predict = ridge_predict,
) -> CrossFit:
    """K-fold cross-fitted q_hat(x_i, a) for all actions a.

    Rounds are randomly split (seeded) into ``n_folds`` folds; fold k's rows
    are predicted by ``fit`` on the other folds only, so a round's own reward
    never enters its prediction -- which keeps DR's correction unbiased.
    ``fit(design, y) -> model`` and ``predict(model, design) -> y_hat`` act on
    :func:`interaction_design` rows.
    """
    x = np.asarray(features, dtype=float)
    a = np.asarray(action, dtype=np.int64)
    y = np.asarray(reward, dtype=float)
    n = a.size
    n_act = int(n_actions or (x.shape[1] if x.ndim == 3 else a.max() + 1))
    if not 2 <= n_folds <= n:
        raise ValueError("need 2 <= n_folds <= n")
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % n_folds
    out = np.empty((n, n_act))
    for k in range(n_folds):
        train, test = fold != k, fold == k
        model = fit(interaction_design(x[train], a[train], n_act), y[train])
        for b in range(n_act):
            design = interaction_design(x[test], np.full(test.sum(), b), n_act)
            out[test, b] = predict(model, design)
    return CrossFit(out, fold)
