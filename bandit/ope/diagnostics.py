"""How far a target policy is from the logging policy: importance-weight
diagnostics (effective sample size, maximum weight share, support)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from bandit.ope.estimate import safe_ratio
from bandit.ope.estimators import ratio_to_pscore, target_policy

# --------------------------------------------------------------------------- diagnostics


@dataclass(frozen=True)
class Diagnostics:
    """Weight and support diagnostics of a (log, target policy) pair.

    effective_sample_size  (sum w)^2 / sum w^2; n when all weights are equal
    max_weight, mean_weight  of w_i = pi(a_i|x_i)/mu(a_i|x_i); mean ~ 1 if healthy
    support_deficiency     share of rounds where pi puts mass on an action
                           the logger could not choose (IPS is biased then)
    unsupported_mass       mean target mass on such actions (the share of the
                           target's value IPS cannot see)
    """

    n: int
    effective_sample_size: float
    max_weight: float
    mean_weight: float
    support_deficiency: float
    unsupported_mass: float


def diagnose(
    *,
    action: ArrayLike,
    pscore: ArrayLike | None,
    action_dist: ArrayLike,
    action_mask: ArrayLike | None = None,
    logging_dist: ArrayLike | None = None,
) -> Diagnostics:
    """Compute :class:`Diagnostics` for one log (no batch axes).

    An action is unsupported in a round if ``action_mask`` is False there or,
    when the full ``logging_dist`` (n, A) is known, its logging probability is
    0. Deterministic loggers are allowed here (that is when this matters).
    """
    act, dist, mask, pi_logged = target_policy(action, action_dist, action_mask)
    if act.ndim != 1:
        raise ValueError("diagnose() takes a single log (no batch axes)")
    w = ratio_to_pscore(pi_logged, pscore, allow_deterministic=True)
    supported = mask if logging_dist is None else mask & (np.asarray(logging_dist) > 0)
    lost = np.where(supported, 0.0, dist).sum(axis=-1)
    return Diagnostics(
        n=int(w.size),
        effective_sample_size=float(safe_ratio(w.sum() ** 2, (w**2).sum())),
        max_weight=float(w.max()),
        mean_weight=float(w.mean()),
        support_deficiency=float((lost > 0).mean()),
        unsupported_mass=float(lost.mean()),
    )
