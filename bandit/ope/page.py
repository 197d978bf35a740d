"""Multi-slot logs: an estimator run per slot, and the page value as the sum
over slots (each slot conditioned on the logged earlier slots)."""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

from bandit.ope.estimate import Estimate, FloatArray, make_estimate
from bandit.ope.estimators import OffPolicyEstimator

# --------------------------------------------------------------------------- multi-slot


def per_slot_estimate(
    estimator: OffPolicyEstimator | Callable[..., Estimate],
    *,
    reward: ArrayLike,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    estimated_rewards: ArrayLike | None = None,
    action_mask: ArrayLike | None = None,
) -> Estimate:
    """Value of each slot of a CCB log; batch axis K appended (value shape (..., K)).

    Inputs carry a slot axis after the round axis: reward/action/pscore
    (..., n, K), action_dist/estimated_rewards/action_mask (..., n, K, A).
    ``pscore`` and ``action_dist`` must be *slot-conditional*:
    mu(a_k | x, a_<k) and pi(a_k | x, a_<k) given the logged earlier slots.
    Each slot is a single-slot problem. Assumption: this estimates slot k's
    reward with earlier slots as logged and slot k from the target -- equal
    to the target's slot value when slot k's reward and pi(. | x, a_<k) do
    not depend on the earlier choices (e.g. disjoint per-slot candidates).
    """

    def slot_first(arr: ArrayLike | None, extra: int) -> FloatArray | None:
        if arr is None:
            return None
        arr = np.asarray(arr)
        return np.moveaxis(arr, arr.ndim - 1 - extra, arr.ndim - 2 - extra)

    run = estimator.estimate if isinstance(estimator, OffPolicyEstimator) else estimator
    log = dict(reward=slot_first(reward, 0), action=slot_first(action, 0),
               pscore=slot_first(pscore, 0), action_dist=slot_first(action_dist, 1),
               estimated_rewards=slot_first(estimated_rewards, 1),
               action_mask=slot_first(action_mask, 1))
    return run(**log)


def page_estimate(slot_estimate: Estimate) -> Estimate:
    """Page value = sum of per-slot values (last batch axis), keeping ratio terms
    separate so the bootstrap still resamples each slot's ratio jointly."""
    e = slot_estimate
    if not e.batch_shape:
        raise ValueError("page_estimate expects a per-slot estimate with a slot axis")
    terms = e.num.shape[-3] * e.num.shape[-2]
    num = e.num.reshape(e.num.shape[:-3] + (terms, e.n))
    den = e.den.reshape(e.den.shape[:-3] + (terms, e.n))
    return make_estimate(f"page-{e.name}", e.base.sum(axis=-2), num, den)
