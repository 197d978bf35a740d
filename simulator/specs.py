"""The one policy spec syntax of ``placement simulate`` and ``placement replay``.

A policy is named the same way in both commands:

* ``vw`` / ``vw:key=value,...`` -- the engine's VW learner with
  :class:`bandit.vwargs.LearningSettings` (keys: :data:`VW_KEYS`;
  ``interactions=CA+SA``); ``vw`` alone means the defaults;
* ``uniform``, ``baseline``, ``logged`` (replay), ``greedy-ctr``, ``rule``,
  ``oracle`` (simulate), ``model:DIR[:surface[:version]]`` and ``probs:FILE``
  (replay): see each command's ``--help``.

The old simulate spellings ``engine`` and ``engine:<explorer>`` still work:
they mean ``vw`` and ``vw:algorithm=<explorer>``, with a deprecation warning.
Light on purpose (no VW, no numpy): ``--help`` reads it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import Any

from bandit.vwargs import EXPLORERS, Exploration, LearningSettings, SettingsError

# vw: spec key -> (object, field); "lambda" is spelled without the underscore.
_EXPLORATION_KEYS = {f.name.rstrip("_"): f.name for f in fields(Exploration)}
_LEARNING_KEYS = {"learning_rate", "power_t", "cb_type", "bits", "l2", "interactions", "coin", "fill"}
VW_KEYS = tuple(sorted(set(_EXPLORATION_KEYS) | _LEARNING_KEYS))


class TargetError(ValueError):
    """A target policy that cannot be built or evaluated; the message names the
    spec, file and line."""


# What ``placement simulate`` compares the engine with.
BASELINES = ("uniform", "greedy-ctr", "rule", "oracle")


@dataclass(frozen=True)
class PolicySpec:
    """A picklable simulated policy: its name as the user wrote it, and for
    the engine its learning settings (None for a baseline)."""

    name: str
    settings: LearningSettings | None = None

    @property
    def learns_with_vw(self) -> bool:
        return self.settings is not None

    def learning_settings(self) -> LearningSettings:
        if self.settings is None:
            raise ValueError(f"policy '{self.name}' is a baseline, not the engine")
        return self.settings


def parse_policy(spec: str | PolicySpec) -> PolicySpec:
    """A ``simulate --policy``: ``vw[:key=value,...]`` or a baseline."""
    if isinstance(spec, PolicySpec):
        return spec
    settings = vw_settings(spec)
    if settings is not None:
        return PolicySpec(spec, settings)
    if spec in BASELINES:
        return PolicySpec(spec)
    raise TargetError(f"unknown policy '{spec}': vw, vw:key=value,... (keys: {', '.join(VW_KEYS)}), "
                      f"{', '.join(BASELINES)}")


def vw_settings(text: str) -> LearningSettings | None:
    """The settings a VW spec names (``vw``, ``vw:...``, or the deprecated
    ``engine``, ``engine:<explorer>``); None when ``text`` is no VW spec."""
    kind, _, rest = text.strip().partition(":")
    kind = kind.lower()
    if kind == "vw":
        return parse_settings(rest, where=f"policy '{text}'")
    if kind != "engine":
        return None
    modern = f"vw:algorithm={rest}" if rest else "vw"
    warnings.warn(f"policy '{text}' is the old spelling of '{modern}'; it will stop working in a later release",
                  FutureWarning, stacklevel=2)
    if rest and rest not in EXPLORERS:
        raise TargetError(f"unknown explorer '{rest}' in '{text}': one of {', '.join(EXPLORERS)}")
    return parse_settings(f"algorithm={rest}" if rest else "", where=f"policy '{text}'")


def parse_settings(text: str, where: str = "settings", base: LearningSettings | None = None) -> LearningSettings:
    """``algorithm=epsilon,epsilon=0.1,learning_rate=0.3,interactions=CA+SA`` on top of ``base``."""
    settings = base or LearningSettings()
    explore: dict[str, Any] = {}
    learn: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not value.strip():
            raise TargetError(f"{where}: '{item}' must look like key=value")
        if key == "algorithm" and value not in EXPLORERS:
            raise TargetError(f"{where}: algorithm '{value}' is not one of {', '.join(EXPLORERS)}")
        if key in _EXPLORATION_KEYS:
            name = _EXPLORATION_KEYS[key]
            explore[name] = _typed(getattr(Exploration(), name), value.strip(), where, key)
        elif key == "interactions":
            learn[key] = tuple(v for v in value.strip().split("+") if v)
        elif key in _LEARNING_KEYS:
            learn[key] = _typed(getattr(LearningSettings(), key), value.strip(), where, key)
        else:
            raise TargetError(f"{where}: unknown setting '{key}'; known: {', '.join(VW_KEYS)}")
    try:
        return replace(settings, exploration=replace(settings.exploration, **explore), **learn).validate()
    except SettingsError as exc:
        raise TargetError(f"{where}: {exc}") from None


def _typed(default: Any, value: str, where: str, key: str) -> Any:
    try:
        if isinstance(default, str):
            return value
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if isinstance(default, int):
            return int(value)
        return float(value)
    except ValueError:
        raise TargetError(f"{where}: {key}={value} is not a {type(default).__name__}") from None


def settings_label(settings: LearningSettings) -> str:
    """A short, parseable ``vw:`` string naming the settings that matter."""
    ex = settings.exploration
    parts = [f"algorithm={ex.algorithm}"]
    per_algo = {
        "epsilon": ("epsilon",), "softmax": ("lambda_",), "bag": ("bag_size", "epsilon"),
        "cover": ("cover_size", "psi", "epsilon"), "squarecb": ("gamma_scale", "gamma_exponent", "floor"),
        "regcb": ("mellowness", "reward_low", "reward_high", "floor"),
        "rnd": ("rnd_size", "rnd_alpha", "rnd_invlambda", "epsilon"), "first": ("first",),
    }
    parts += [f"{name.rstrip('_')}={getattr(ex, name):g}" for name in per_algo[ex.algorithm]]
    parts.append(f"learning_rate={settings.learning_rate:g}")
    parts.append(f"interactions={'+'.join(settings.interactions)}")
    default = LearningSettings()
    for name in ("power_t", "cb_type", "bits", "l2", "coin", "fill"):
        if getattr(settings, name) != getattr(default, name):
            parts.append(f"{name}={getattr(settings, name)}")
    return "vw:" + ",".join(parts)
