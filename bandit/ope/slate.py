"""Slate estimators of the page value (standard, independent and
pseudo-inverse IPS), on the product of the per-slot weights."""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

from bandit.ope.estimate import PSCORE_TOL, Estimate, FloatArray, check_pscore, make_estimate

# --------------------------------------------------------------------------- slates


def _slate_weights(pscore: ArrayLike | None, target_pscore: ArrayLike) -> FloatArray:
    """Per-slot ratios (..., n, K) after the usual propensity refusals."""
    p = check_pscore(pscore)
    t = np.asarray(target_pscore, dtype=float)
    if t.shape != p.shape or p.ndim < 2:
        raise ValueError(f"target_pscore {t.shape} must match pscore {p.shape} (n, K)")
    if not np.isfinite(t).all() or (t < 0).any() or (t > 1 + PSCORE_TOL).any():
        raise ValueError("target_pscore must be probabilities")
    return t / p


def _page_reward(reward: ArrayLike, shape: tuple[int, ...]) -> FloatArray:
    """Accept page reward (..., n) or slot rewards (..., n, K) (summed)."""
    r = np.asarray(reward, dtype=float)
    r = r.sum(axis=-1) if r.shape == shape else r
    if r.shape != shape[:-1] or not np.isfinite(r).all():
        raise ValueError(f"reward must be (..., n) or (..., n, K) matching {shape}")
    return r


def slate_standard_ips(
    *, reward: ArrayLike, pscore: ArrayLike | None, target_pscore: ArrayLike
) -> Estimate:
    """SIPS (obp ``SlateStandardIPS``): V = mean_i r_i prod_k pi_k / mu_k.

    ``pscore``/``target_pscore`` (n, K) are slot-conditional probabilities of
    the logged slate (mu(a_k | x, a_<k)); by the chain rule their product is
    the joint slate propensity, so this is unbiased for any page reward with
    no assumption on reward structure -- at the price of product weights.
    (If you pass marginals instead, it is only valid when both policies pick
    slots independently.) ``reward`` is the page reward (n,) or slot rewards
    (n, K), summed as obp does.
    """
    w = _slate_weights(pscore, target_pscore)
    joint = w.prod(axis=-1)
    return make_estimate("sips", joint * _page_reward(reward, w.shape), weights=joint)


def slate_independent_ips(
    *, reward: ArrayLike, pscore: ArrayLike | None, target_pscore: ArrayLike
) -> Estimate:
    """IIPS (obp ``SlateIndependentIPS``, Li et al. 2018): V = mean_i sum_k w_ik r_ik.

    w_ik = pi(a_ik at k | x)/mu(a_ik at k | x) with *marginal* slot
    probabilities and ``reward`` the per-slot rewards (n, K). Unbiased when
    slot k's reward depends only on (x, a_k) (item-position model).
    """
    w = _slate_weights(pscore, target_pscore)
    r = np.asarray(reward, dtype=float)
    if r.shape != w.shape:
        raise ValueError("slate_independent_ips needs per-slot rewards (n, K)")
    return make_estimate("iips", (w * r).sum(axis=-1))


def slate_pseudo_inverse(
    *, reward: ArrayLike, pscore: ArrayLike | None, target_pscore: ArrayLike
) -> Estimate:
    """PI (Swaminathan et al. 2017): V = mean_i (sum_k w_ik - (K - 1)) r_i.

    w_ik uses *marginal* slot probabilities; ``reward`` is the page reward
    (n,) or slot rewards (n, K) (summed; slot rewards need not be observed).
    Unbiased when the page reward is additive over slots,
    E[r | x, s] = sum_k phi_k(x, s_k), and the logging policy picks slots
    independently given x (this closed form of the pseudo-inverse is exact
    for product logging policies; the target may be any joint policy -- only
    its marginals enter). Variance grows ~linearly in K, not exponentially.
    """
    w = _slate_weights(pscore, target_pscore)
    gain = w.sum(axis=-1) - (w.shape[-1] - 1)
    return make_estimate("pi", gain * _page_reward(reward, w.shape))


SLATE_ESTIMATORS: dict[str, Callable[..., Estimate]] = {
    "sips": slate_standard_ips,
    "iips": slate_independent_ips,
    "pi": slate_pseudo_inverse,
}
