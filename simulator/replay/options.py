"""What a replay is asked to do: estimator, interval and target names, and
the options of a whole run. Light on purpose: the command line reads these to
print its help without loading numpy, VW or any estimator."""

from __future__ import annotations

from dataclasses import dataclass

from bandit.vwargs import LearningSettings

ESTIMATORS = ("dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os")
SLATE = ("iips", "pi", "sips")
INTERVALS = ("normal", "bootstrap", "bernstein")
# Switch-DR: rounds with weight above this fall back to DM. DRos: lambda of the
# optimistic shrinkage w*l/(w^2+l), which caps each effective weight at sqrt(l)/2.
ESTIMATOR_PARAMS: dict[str, dict[str, float]] = {"switch-dr": {"lambda_": 20.0}, "dr-os": {"lambda_": 100.0}}

# --search: the default grid of VW settings, one "key=v1|v2" axis each.
DEFAULT_GRID = (
    "algorithm=epsilon|squarecb|bag",
    "epsilon=0.02|0.05|0.1|0.2",
    "gamma_scale=1|10|100",
    "learning_rate=0.1|0.5|1",
    "interactions=CA+SA+CSA|CA+SA|CA",
)


@dataclass(frozen=True)
class EstimationConfig:
    estimators: tuple[str, ...] = ESTIMATORS
    slate: tuple[str, ...] = SLATE
    intervals: tuple[str, ...] = INTERVALS
    level: float = 0.95
    n_bootstrap: int = 1000  # page-scope estimates only
    seed: int = 0
    reward_max: float | None = None  # a-priori reward bound (Bernstein interval, clipping)
    reward_min: float | None = None  # a-priori lower reward bound (clipping); default: 0 for clicks, else observed
    min_ess: float = 100.0  # estimates from fewer effective samples are flagged


@dataclass(frozen=True)
class ReplayOptions:
    policies: tuple[str, ...] = ("uniform", "logged", "baseline", "vw")
    estimation: EstimationConfig = EstimationConfig()
    workers: int | None = None
    ray: bool = False  # VW targets on a local Ray instead of a process pool
    ray_address: str | None = None  # ... or on this Ray cluster
    search: bool = False
    grid: tuple[str, ...] = ()  # "key=v1|v2" axes; empty: DEFAULT_GRID
    current: LearningSettings = LearningSettings()
    search_estimator: str = "dr"
    importance: bool = False
    importance_settings: LearningSettings | None = None  # default: current
    importance_estimator: str = "dr"

