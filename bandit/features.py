"""Feature encoding: the one place where context, collection and slot features
become Vowpal Wabbit input.

Features come in named groups; each group becomes one VW namespace whose name
starts with a role letter, so interactions can be stated per role:

    C.<group>  context (customer, session, time)      -> shared example
    A          collection identity (``id=<collection>``) -> action example
    A.<group>  collection features                    -> action example
    S          slot identity (``id=<slot>``)            -> slot example
    S.<group>  slot features                          -> slot example

A numeric feature ``age: 0.3`` is the VW feature ``age`` with the value VW
computes with, 0.3 rounded to float32; a categorical feature
``segment: "student"`` is the VW feature ``segment=student`` with value 1.

Serving writes VW's text format, learning VW's DSJSON; both must give VW the
same features (a property test checks, through the weights VW learns):

* names (groups, features, ids) are refused unless they start with an ASCII
  letter or digit followed by letters, digits, ``_``, ``.``, ``-``. A DSJSON
  key starting with ``_`` is one of VW's own fields (``_label``, ``_multi``,
  ``_text``, ``_a``, ``_p``, ...) or dropped, and a feature name starts a key;
* categories are refused if they hold a control character (U+0000-U+001F,
  U+007F-U+009F: VW's hash stops at NUL, its text parser at line ends) or an
  unpaired surrogate (not UTF-8); the separators of the text format (Unicode
  whitespace, ``|``, ``:``) become ``_`` in both forms;
* numbers are rounded to float32 once, here; the text form writes them as
  hexadecimal floats, which VW reads exactly (its decimal fast path is off by
  an ulp or more, e.g. ``0.3`` reads as 0.29999995), the JSON form as the
  float32's exact decimal.
"""

from __future__ import annotations

import bisect
import math
import re
import struct
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Mapping, Sequence, Union

FeatureValue = Union[float, str]

CONTEXT, ACTION, SLOT = "C", "A", "S"
NAME_RULE = "may only contain ASCII letters, digits, '_', '.', '-', and must start with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")  # fullmatch: '$' would let a final newline through
# Characters VW's text format treats as separators.
_VW_SPECIAL = re.compile(r"[\s|:]")
# Refused in categories: C0/C1 controls and unpaired surrogates (see the module docstring).
_UNENCODABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_FLOAT32 = struct.Struct("<f")


class FeatureError(ValueError):
    """A feature, group or id that cannot be encoded; the message names it."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may carry; beyond them input is refused."""

    max_groups: int = 32
    max_features_per_group: int = 256
    max_name_length: int = 128
    max_category_length: int = 256


DEFAULT_LIMITS = Limits()
FLOAT32_MAX = 3.4028234663852886e38  # VW computes in float32


@dataclass(frozen=True)
class FeatureGroup:
    """A named group of features (one VW namespace)."""

    name: str
    features: Mapping[str, FeatureValue] = field(default_factory=dict)


Groups = tuple[FeatureGroup, ...]


def groups_from_dict(raw: Mapping[str, Mapping[str, FeatureValue]] | None) -> Groups:
    """Build groups from ``{"group": {"feature": value}}`` (the log's layout)."""
    if not raw:
        return ()
    return tuple(FeatureGroup(name, dict(feats)) for name, feats in raw.items())


def groups_to_dict(groups: Iterable[FeatureGroup]) -> dict[str, dict[str, FeatureValue]]:
    return {g.name: dict(g.features) for g in groups}


def check_name(kind: str, name: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """Refuse names VW would mangle or read as its own fields (see the module
    docstring), or that exceed the limits; the message shows the name escaped."""
    if not name:
        raise FeatureError(f"{kind} name is empty")
    if len(name) > limits.max_name_length:
        raise FeatureError(f"{kind} name {name[:40]!r}... is longer than {limits.max_name_length}")
    if not _NAME.fullmatch(name):
        raise FeatureError(f"{kind} name {name!r} {NAME_RULE}")
    return name


def check_groups(groups: Iterable[FeatureGroup], where: str, limits: Limits = DEFAULT_LIMITS) -> Groups:
    """Validate groups: names, counts, finite numbers, category lengths."""
    groups = tuple(groups)
    if len(groups) > limits.max_groups:
        raise FeatureError(f"{where}: {len(groups)} feature groups, at most {limits.max_groups}")
    seen: set[str] = set()
    for group in groups:
        check_name(f"{where} group", group.name, limits)
        if group.name in seen:
            raise FeatureError(f"{where}: group '{group.name}' appears twice")
        seen.add(group.name)
        if len(group.features) > limits.max_features_per_group:
            raise FeatureError(
                f"{where} group '{group.name}': {len(group.features)} features, "
                f"at most {limits.max_features_per_group}"
            )
        for name, value in group.features.items():
            check_name(f"{where} group '{group.name}' feature", name, limits)
            _check_value(f"{where} feature '{group.name}.{name}'", value, limits)
    return groups


def _check_value(where: str, value: FeatureValue, limits: Limits) -> None:
    if isinstance(value, str):
        if len(value) > limits.max_category_length:
            raise FeatureError(f"{where}: category longer than {limits.max_category_length}")
        bad = _UNENCODABLE.search(value)
        if bad:
            raise FeatureError(f"{where}: category holds U+{ord(bad.group()):04X} at position {bad.start()}: "
                               "control characters and unpaired surrogates cannot be encoded")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FeatureError(f"{where}: value must be a number or a category string")
    if not math.isfinite(value):
        raise FeatureError(f"{where}: value {value} is not finite")
    if abs(value) > FLOAT32_MAX:
        raise FeatureError(f"{where}: value {value} is beyond VW's float range (±3.4e38)")


def _category(value: str) -> str:
    return _VW_SPECIAL.sub("_", value)


def float32(value: float) -> float:
    """The value VW computes with. Checked values are within float32's range;
    an unchecked one beyond it becomes ±inf, as VW's own conversion makes it."""
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def _encoded(features: Mapping[str, FeatureValue]) -> list[tuple[str, float]]:
    """(VW feature name, value) pairs, categoricals one-hot, numbers as float32."""
    out = []
    for name, value in features.items():
        if isinstance(value, str):
            out.append((f"{name}={_category(value)}", 1.0))
        else:
            out.append((name, float32(value)))
    return out


def namespaces(role: str, groups: Iterable[FeatureGroup], identity: str | None = None) -> dict[str, dict[str, float]]:
    """The VW namespaces for one role: ``{namespace: {feature: value}}``."""
    spaces: dict[str, dict[str, float]] = {}
    if identity is not None:
        spaces[role] = {f"id={_category(identity)}": 1.0}
    for group in groups:
        spaces[f"{role}.{group.name}"] = dict(_encoded(group.features))
    return spaces


def vw_text(spaces: Mapping[str, Mapping[str, float]]) -> str:
    """Namespaces in VW text format: ``|ns a:0x1.0000000000000p-1 b=x``. Values
    come from :func:`namespaces` (float32 already); hexadecimal is what VW's
    text parser reads exactly (through strtof)."""
    parts = []
    for ns, feats in spaces.items():
        body = " ".join(name if value == 1.0 else f"{name}:{value.hex()}" for name, value in feats.items())
        parts.append(f"|{ns} {body}")
    return " ".join(parts)


def split_namespace(ns: str) -> tuple[str, str]:
    """``"C.user"`` -> ``("C", "user")``; identity namespaces give ``(role, "")``."""
    role, _, group = ns.partition(".")
    return role, group


@dataclass(frozen=True)
class Candidate:
    """A collection offered for a decision."""

    id: str
    groups: Groups = ()

    def spaces(self) -> dict[str, dict[str, float]]:
        return namespaces(ACTION, self.groups, identity=self.id)

    @cached_property
    def text(self) -> str:
        """The ``|A ...`` VW text, built once per candidate object: the catalog
        and the server's candidate cache hand the same objects to every request."""
        return vw_text(self.spaces())

    @cached_property
    def action_line(self) -> str:
        """The candidate's line of a ccb example, one string object per
        candidate: the policy's parsed-example cache then hashes it once."""
        return f"ccb action {self.text}"


@dataclass(frozen=True)
class SlotSpec:
    """A slot to fill, with the merchandiser's default collection for it."""

    id: str
    groups: Groups = ()
    default_collection: str = ""

    def spaces(self) -> dict[str, dict[str, float]]:
        return namespaces(SLOT, self.groups, identity=self.id)


def context_spaces(groups: Iterable[FeatureGroup]) -> dict[str, dict[str, float]]:
    return namespaces(CONTEXT, groups)


# Knots (days to an event; negative: after it) of the calendar encoding below.
# Denser near the event, where demand changes fastest; beyond the ends the
# nearest end holds.
DAYS_TO_EVENT_KNOTS: tuple[float, ...] = (-14.0, -7.0, -3.0, 0.0, 3.0, 7.0, 14.0, 21.0, 28.0, 42.0)


def tokens(spaces: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Namespaces flattened to ``{"namespace:feature": value}``: the features
    as offline evaluation's reward model and the log's columnar copy name them."""
    return {f"{ns}:{name}": float(v) for ns, feats in spaces.items() for name, v in feats.items()}


def slot_tokens(spec: "SlotSpec | None", slot_id: str, position: int) -> dict[str, float]:
    """What the reward model knows of where a choice was shown: the slot's
    features (when ``spec`` is the slot chosen for), its position in the
    event and its id (also when slots are named, the position is a feature)."""
    out = tokens(spec.spaces()) if spec is not None and spec.id == slot_id else {}
    out[f"{SLOT}:position={position}"] = 1.0
    out.setdefault(f"{SLOT}:id={slot_id}", 1.0)
    return out


def days_to_event_features(days: float, knots: Sequence[float] = DAYS_TO_EVENT_KNOTS) -> dict[str, float]:
    """Days to an event as a smooth function a linear learner can bend: the
    piecewise-linear "hat" basis on ``knots``, at most two non-zero features
    (``dte_m7``, ``dte_0``, ``dte_14``, ...) summing to 1. A weight per knot,
    interacted with the collection, learns that collection's own demand curve
    (ramp, peak, tail) as a piecewise-linear function, where a coarse bucket
    learns a step per bucket and a single number a straight line."""
    if not math.isfinite(days):
        raise FeatureError(f"days to event {days} is not finite")
    knots = tuple(knots)
    if days <= knots[0]:
        return {_knot_name(knots[0]): 1.0}
    if days >= knots[-1]:
        return {_knot_name(knots[-1]): 1.0}
    i = bisect.bisect_right(knots, days) - 1
    lo, hi = knots[i], knots[i + 1]
    w = (days - lo) / (hi - lo)
    out = {_knot_name(lo): 1.0 - w}
    if w > 0:
        out[_knot_name(hi)] = w
    return out


def _knot_name(knot: float) -> str:
    return f"dte_{'m' if knot < 0 else ''}{abs(knot):g}"


def days_to_event_from_features(features: Mapping[str, FeatureValue],
                                knots: Sequence[float] = DAYS_TO_EVENT_KNOTS) -> float | None:
    """The days to the event that :func:`days_to_event_features` encoded
    (clamped to the knots' range), or None when ``features`` hold none."""
    names = {_knot_name(k): k for k in knots}
    weights = [(names[n], float(v)) for n, v in features.items() if n in names and not isinstance(v, str)]
    if not weights:
        return None
    return sum(k * w for k, w in weights) / sum(w for _, w in weights)
