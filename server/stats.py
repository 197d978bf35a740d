"""What an engine reports about itself: one snapshot that feeds both
``PlacementAdmin.GetStats`` and the Prometheus metrics, so the two can never
count differently."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SurfaceStats:
    surface: str
    model_version: str
    decisions: int
    examples_learned: int
    apprentice_decisions: int
    apprentice_agreements: int
    learner_lag_seconds: float


@dataclass(frozen=True)
class Stats:
    """Counters since the data directory was created (every serving process
    included), and gauges of now."""

    decisions: int
    rewards: int
    activations: int
    bad_requests: int
    pending_refused: int  # Decides refused at limits.max_pending_decisions
    explain_ablations: int  # VW predicts spent on explain=true
    explains_truncated: int  # explanations cut short by their bounds
    joined: int
    joined_with_reward: int
    default_reward_applied: int
    unactivated_dropped: int
    join_failed: int
    unserved_dropped: int  # decisions whose caller was gone once they were logged: not learned
    rewards_rejected_unknown: int
    rewards_rejected_expired: int
    pending: int
    learner_errors: int
    catalog_version: int
    surfaces: tuple[SurfaceStats, ...]
    # The learner's input (see LearnerConfig.max_backlog_bytes and sample_rate):
    # joined decisions waiting to be learned, its bound, the decisions
    # subsampling left out of the joined log, and examples learned per second
    # over the last 10 s.
    learn_backlog_items: int = 0
    learn_backlog_bytes: int = 0
    learn_backlog_limit_bytes: int = 0
    learn_subsampled: int = 0
    learner_events_per_second: float = 0.0
