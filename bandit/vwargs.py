"""Learning settings and the one place where they become a VW argument string.

Every surface, the online learner, offline replay and the simulator build their
workspaces through :func:`vw_arguments`, so a setting evaluated offline is the
setting that serves.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

EXPLORERS = ("epsilon", "softmax", "bag", "cover", "squarecb", "regcb", "rnd", "first")
# How a multi-slot decision is centred (bandit.policy): "joint" puts each slot's
# most likely collection where the best whole assignment of the model's scores
# puts it; "in_order" is VW's own ccb walk, each slot taking its own best.
FILLS = ("joint", "in_order")
CB_TYPES = ("mtr", "ips", "dr", "dm")
# What VW 9.11.9 accepts per explorer (it refuses the rest when the workspace
# is built, i.e. when a surface is first served, not when it is configured).
CB_TYPES_FOR = {"squarecb": ("mtr",), "regcb": ("mtr",), "cover": ("mtr", "ips", "dr")}
_INTERACTION = re.compile(r"^[CAS:]{2,3}$")


class SettingsError(ValueError):
    """A learning setting out of range; the message names it."""


@dataclass(frozen=True)
class Exploration:
    """How the policy explores. Only the fields of the chosen algorithm matter."""

    algorithm: str = "squarecb"
    epsilon: float = 0.05  # epsilon-greedy; floor for bag/cover; 'first' ignores it
    lambda_: float = 10.0  # softmax inverse temperature
    bag_size: int = 5
    cover_size: int = 4
    psi: float = 1.0  # cover
    gamma_scale: float = 30.0  # squarecb; by measurement (bench.defaults_grid, BENCHMARKS.md)
    gamma_exponent: float = 0.5  # squarecb
    # squarecb, regcb: mix this much uniform exploration in (VW's --epsilon with
    # --squarecb; VW ignores --epsilon with --regcb, so the policy mixes it in)
    floor: float = 0.0
    rnd_size: int = 3
    rnd_alpha: float = 0.1
    rnd_invlambda: float = 0.1
    first: int = 100  # explore-first: uniform for the first N decisions
    # regcb (RegCB-elim): uniform over the collections whose confidence
    # interval (from the model's sensitivity, so per context) could still hold
    # the best. mellowness is its c0 (width); reward_low/high the range joined
    # rewards fall in, which scales the intervals. RegCB-opt is not offered:
    # it is deterministic, and a log without exploration evaluates nothing.
    mellowness: float = 1e-4
    reward_low: float = 0.0
    reward_high: float = 1.0

    def validate(self) -> "Exploration":
        if self.algorithm not in EXPLORERS:
            raise SettingsError(f"exploration algorithm '{self.algorithm}' is not one of {', '.join(EXPLORERS)}")
        _in_range("epsilon", self.epsilon, 0.0, 1.0)
        _in_range("floor", self.floor, 0.0, 1.0)
        _in_range("lambda", self.lambda_, 0.0, 1e6)
        _in_range("gamma_scale", self.gamma_scale, 1e-6, 1e6)
        _in_range("gamma_exponent", self.gamma_exponent, 0.0, 1.0)
        _in_range("psi", self.psi, 0.0, 1e6)
        _in_range("rnd_alpha", self.rnd_alpha, 0.0, 1e6)
        _in_range("rnd_invlambda", self.rnd_invlambda, 1e-9, 1e6)
        for name in ("bag_size", "cover_size", "rnd_size"):
            _in_range(name, getattr(self, name), 1, 64)
        _in_range("first", self.first, 1, 10**9)
        _in_range("mellowness", self.mellowness, 1e-12, 1e3)
        _in_range("reward_low", self.reward_low, -1e6, 1e6)
        _in_range("reward_high", self.reward_high, -1e6, 1e6)
        if not self.reward_low < self.reward_high:
            raise SettingsError(f"reward_low {self.reward_low:g} must be below reward_high {self.reward_high:g}")
        return self

    @property
    def policy_floor(self) -> float:
        """The floor the policy must mix in itself: RegCB's (VW ignores
        ``--epsilon`` with ``--regcb``); 0 where VW applies it (squarecb)."""
        return self.floor if self.algorithm == "regcb" else 0.0

    def arguments(self) -> list[str]:
        algo = self.algorithm
        if algo == "epsilon":
            return ["--epsilon", _num(self.epsilon)]
        if algo == "softmax":
            return ["--softmax", "--lambda", _num(self.lambda_)]
        if algo == "bag":
            return ["--bag", str(self.bag_size), "--epsilon", _num(self.epsilon)]
        if algo == "cover":
            return ["--cover", str(self.cover_size), "--psi", _num(self.psi), "--epsilon", _num(self.epsilon)]
        if algo == "squarecb":
            floor = ["--epsilon", _num(self.floor)] if self.floor else []
            return ["--squarecb", "--gamma_scale", _num(self.gamma_scale), "--gamma_exponent",
                    _num(self.gamma_exponent), *floor]
        if algo == "regcb":  # costs are -reward (bandit.policy)
            return ["--regcb", "--mellowness", _num(self.mellowness), "--cb_min_cost", _num(0.0 - self.reward_high),
                    "--cb_max_cost", _num(0.0 - self.reward_low)]
        if algo == "rnd":
            return ["--rnd", str(self.rnd_size), "--rnd_alpha", _num(self.rnd_alpha),
                    "--rnd_invlambda", _num(self.rnd_invlambda), "--epsilon", _num(self.epsilon)]
        return ["--first", str(self.first)]


@dataclass(frozen=True)
class LearningSettings:
    """Everything that shapes a VW contextual-bandit learner."""

    exploration: Exploration = field(default_factory=Exploration)
    # Role letters (C context, A collection, S slot); ':' is VW's wildcard.
    interactions: tuple[str, ...] = ("CA", "SA", "CSA")
    # by measurement: bench.defaults_grid (20 seeds x 3 scenarios, confirmed at
    # 20k decisions) and bench.stability, BENCHMARKS.md
    learning_rate: float = 0.05
    power_t: float = 0.5
    cb_type: str = "mtr"
    bits: int = 18
    l2: float = 0.0
    coin: bool = False  # VW's parameter-free coin-betting optimiser (learning_rate and power_t then unused)
    # see FILLS; not a VW option (the model is the same either way). joint by
    # measurement: +1.9 points of the oracle in seasonal-retail at 100k (90.2 vs
    # 88.3 %) for 1.7x the policy's CPU at 50x3 since it needs one predict
    # (BENCHMARKS.md); in_order for a surface that counts cores first.
    fill: str = "joint"

    def validate(self) -> "LearningSettings":
        self.exploration.validate()
        for inter in self.interactions:
            if not _INTERACTION.match(inter):
                raise SettingsError(
                    f"interaction '{inter}' must be 2 or 3 role letters from C, A, S (or ':')"
                )
        _in_range("learning_rate", self.learning_rate, 1e-9, 100.0)
        _in_range("power_t", self.power_t, 0.0, 1.0)
        _in_range("bits", self.bits, 10, 28)
        _in_range("l2", self.l2, 0.0, 1.0)
        if not isinstance(self.coin, bool):
            raise SettingsError(f"coin={self.coin!r} must be true or false")
        if self.fill not in FILLS:
            raise SettingsError(f"fill '{self.fill}' is not one of {', '.join(FILLS)}")
        if self.cb_type not in CB_TYPES:
            raise SettingsError(f"cb_type '{self.cb_type}' is not one of {', '.join(CB_TYPES)}")
        algo = self.exploration.algorithm
        allowed = CB_TYPES_FOR.get(algo, CB_TYPES)
        if self.cb_type not in allowed:
            raise SettingsError(f"cb_type '{self.cb_type}' does not work with the '{algo}' explorer "
                                f"(VW accepts only {', '.join(allowed)} with it)")
        if self.exploration.policy_floor and self.fill != "joint":
            raise SettingsError("floor with the 'regcb' explorer needs fill = 'joint' (the policy mixes it in "
                                "before its own draw; with 'in_order' VW draws and ignores it)")
        return self

    def with_exploration(self, **changes: Any) -> "LearningSettings":
        return replace(self, exploration=replace(self.exploration, **changes))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["interactions"] = list(self.interactions)
        return data

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "LearningSettings":
        """Settings from a config table; unknown keys are an error, not ignored."""
        raw = dict(raw)
        explore_raw = dict(raw.pop("exploration", {}) or {})
        if "lambda" in explore_raw:
            explore_raw["lambda_"] = explore_raw.pop("lambda")
        _no_unknown("exploration", explore_raw, Exploration)
        _no_unknown("learning", raw, cls)
        if "interactions" in raw:
            raw["interactions"] = tuple(raw["interactions"])
        return cls(exploration=Exploration(**explore_raw), **raw).validate()


# The options a model file may carry, and whether each takes a value. VW keeps
# a model's options in the file's header (behind a checksum anyone can
# recompute) and applies them when it loads the file; these are exactly the ones
# the arguments built here leave there (plus --bit_precision, which VW adds from
# the header's bits). Anything else could change the learner or make loading
# write files (--readable_model, --final_regressor, -f, --invert_hash, ...).
MODEL_FILE_OPTIONS: dict[str, bool] = {
    **dict.fromkeys(("cb_adf", "cb_explore_adf", "cb_sample", "ccb_explore_adf", "coin", "csoaa_rank", "squarecb",
                     "softmax", "regcb"), False),
    **dict.fromkeys(("bag", "bit_precision", "cb_max_cost", "cb_min_cost", "cb_type", "cover", "csoaa_ldf",
                     "epsilon", "first", "gamma_exponent", "gamma_scale", "interactions", "lambda", "learning_rate",
                     "mellowness", "power_t", "psi", "random_seed", "rnd", "rnd_alpha", "rnd_invlambda"), True),
}
_OPTION_VALUE = re.compile(r"^[A-Za-z0-9_.:+]+$|^-?[0-9][0-9.eE+-]*$")


def check_model_options(options: str) -> None:
    """SettingsError naming the first thing in a model file's options that is
    not an allowed option with, where it takes one, a plain value."""
    tokens = options.split()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name = token[2:] if token.startswith("--") else None
        if name not in MODEL_FILE_OPTIONS:
            raise SettingsError(f"option '{token[:80]}' may not come from a model file "
                                f"(allowed: {', '.join('--' + n for n in sorted(MODEL_FILE_OPTIONS))})")
        if MODEL_FILE_OPTIONS[name]:
            i += 1
            if i == len(tokens) or not _OPTION_VALUE.match(tokens[i]):
                value = tokens[i][:80] if i < len(tokens) else "nothing"
                raise SettingsError(f"option '{token}' in the model file has the value '{value}'")
        i += 1


def vw_arguments(settings: LearningSettings, *, multi_slot: bool = True, dsjson: bool = False) -> str:
    """The VW command line for these settings (quiet, no model file)."""
    settings.validate()
    args = ["--ccb_explore_adf" if multi_slot else "--cb_explore_adf"]
    args += settings.exploration.arguments()
    args += ["--cb_type", settings.cb_type, "-l", _num(settings.learning_rate),
             "--power_t", _num(settings.power_t), "-b", str(settings.bits)]
    if settings.l2:
        args += ["--l2", _num(settings.l2)]
    if settings.coin:
        args.append("--coin")
    for inter in settings.interactions:
        args += ["--interactions", inter]
    if dsjson:
        args.append("--dsjson")
    args.append("--quiet")
    return shlex.join(args)


def _num(value: float) -> str:
    return f"{value:.9g}"


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise SettingsError(f"{name}={value} is outside [{low}, {high}]")


def _no_unknown(where: str, raw: Mapping[str, Any], cls: type) -> None:
    known = set(cls.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise SettingsError(f"unknown {where} setting(s): {', '.join(sorted(unknown))}")
