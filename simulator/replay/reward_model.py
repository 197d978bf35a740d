"""The reward model q_hat(x, k, a) that DM and the DR family lean on: the one
of :mod:`bandit.ope.reward_model`, fitted on a replay log."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bandit.logformat.events import LogFormatError
from bandit.ope.reward_model import RewardModelFit
from bandit.ope.reward_model import fit_reward_model as ope_reward_model
from simulator.replay.logarrays import ReplayLog


def reward_model(log: ReplayLog, seed: int = 0, n_folds: int = 5) -> np.ndarray:
    """Cross-fitted q_hat(x_i, k, a) as (n, K, A): :func:`fit_reward_model`'s ``q``."""
    return fit_reward_model(log, seed, n_folds).q


def fit_reward_model(log: ReplayLog, seed: int = 0, n_folds: int = 5) -> RewardModelFit:
    """The one reward model of :mod:`bandit.ope.reward_model` (a single ridge
    regression over context, slot and collection features and their
    interactions, cross-fitted by decision) on the log, with its held-out quality."""
    action, reward, present = log.by_choice()  # the model reads each decision's choices in order
    if log.features is None:
        raise LogFormatError("this log was read without the reward model's features")
    fit = ope_reward_model(log.features(), action, reward, present, n_folds=n_folds, seed=seed)
    return replace(fit, q=log.to_columns(fit.q))
