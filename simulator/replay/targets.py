"""Target policies for offline replay, and the ``--policy`` string parser.

A target answers one question per logged event and slot: *given the context
and the collections the logged earlier slots already took*, with what
probability would it put each still-available collection into slot k? That is
exactly what the logged propensities are conditioned on, so weights
pi(a_k | x, a_<k) / mu(a_k | x, a_<k) are valid slot by slot.

Spec strings (``--policy``):

* ``uniform`` -- uniformly random over the available collections;
* ``logged`` -- the logging policy itself (its logged ranking);
* ``baseline`` -- the slot's default collection if available, else the first;
* ``vw:key=value,...`` -- a VW learning configuration trained counterfactually
  on the log with progressive validation (keys: see :data:`VW_KEYS`;
  ``interactions=CA+SA``; ``vw`` alone means ``LearningSettings()``);
* ``model:DIR[:surface[:version]]`` -- a saved model version under
  ``DIR/models/<surface>/`` (default surface ``default``, default version the
  one ``CURRENT`` points to), evaluated as is (it does not learn);
* ``probs:FILE`` -- external probabilities, JSON lines
  ``{"event_id": ..., "slot_id": ..., "probabilities": {collection_id: p}}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from bandit.logformat.events import JoinedEvent
from bandit.policy import Policy
from bandit.vwargs import LearningSettings
from server.modelstore import ModelStore, ModelStoreError
from simulator.specs import TargetError, settings_label, vw_settings

PROB_TOLERANCE = 1e-4  # external probabilities must sum to 1 within this
BUILTINS = ("uniform", "logged", "baseline")



Distribution = Sequence[tuple[int, float]]


class Target(Protocol):
    """One target policy being replayed over a log in time order."""

    name: str

    def distribution(self, event: JoinedEvent, k: int, allowed: list[int]) -> Distribution:
        """pi(. | x, logged a_<k) over ``allowed`` (candidate indices)."""
        ...

    def learn(self, event: JoinedEvent) -> None:
        """Called after every slot of ``event`` was valued (progressive validation)."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class TargetSpec:
    """A parsed, picklable ``--policy`` string."""

    kind: str  # uniform | logged | baseline | vw | model | probs
    label: str
    settings: LearningSettings | None = None  # vw, model
    path: Path | None = None  # model file or probabilities file
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def learns(self) -> bool:
        return self.kind == "vw"


def parse_policy(spec: str) -> TargetSpec:
    """Parse a ``--policy`` string; :class:`TargetError` names what is wrong."""
    text = spec.strip()
    kind, _, rest = text.partition(":")
    kind = kind.lower()
    if kind in BUILTINS:
        if rest:
            raise TargetError(f"policy '{spec}': '{kind}' takes no arguments")
        return TargetSpec(kind, kind)
    settings = vw_settings(text)
    if settings is not None:
        return TargetSpec("vw", settings_label(settings), settings)
    if kind == "model":
        return _model_spec(spec, rest)
    if kind == "probs":
        if not rest:
            raise TargetError(f"policy '{spec}': give the file, e.g. probs:targets.jsonl")
        path = Path(rest)
        if not path.is_file():
            raise TargetError(f"policy '{spec}': probabilities file {path} does not exist")
        return TargetSpec("probs", f"probs:{path.name}", path=path)
    raise TargetError(
        f"policy '{spec}': unknown kind '{kind}'; use uniform, logged, baseline, "
        "vw:key=value,..., model:DIR[:surface[:version]] or probs:FILE"
    )


def _model_spec(spec: str, rest: str) -> TargetSpec:
    """A saved version, read through the model store (the one home of its layout)."""
    parts = rest.split(":") if rest else []
    if not parts or not parts[0] or len(parts) > 3:
        raise TargetError(f"policy '{spec}': use model:DIR[:surface[:version]]")
    surface = parts[1] if len(parts) > 1 and parts[1] else "default"
    directory = Path(parts[0]) / "models" / surface
    if not directory.is_dir():
        raise TargetError(f"policy '{spec}': no model directory {directory}")
    store = ModelStore(directory)
    version = _version_number(spec, parts[2]) if len(parts) > 2 and parts[2] else store.current_version()
    if version is None:
        raise TargetError(f"policy '{spec}': {directory / 'CURRENT'} does not exist; name a version")
    if not store.path(version).is_file():
        kept = ", ".join(p.stem for p in sorted(directory.glob("v*.vw"))) or "none"
        raise TargetError(f"policy '{spec}': {store.path(version)} does not exist (kept: {kept})")
    meta: dict[str, Any] = {"surface": surface, "version": version}
    try:  # a version copied without its metadata file is still a model
        info = store.info(version)
        meta.update(examples_learned=info.examples_learned, joined_through=info.joined_through,
                    origin=info.origin, sha256=info.sha256)
    except ModelStoreError:
        pass
    return TargetSpec("model", f"model:{surface}:v{version}", LearningSettings(), store.path(version), meta)


def _version_number(spec: str, text: str) -> int:
    try:
        return int(text.lstrip("v"))
    except ValueError:
        raise TargetError(f"policy '{spec}': version '{text}' is not a number") from None


# --------------------------------------------------------------------------- targets


class Uniform:
    name = "uniform"

    def distribution(self, event: JoinedEvent, k: int, allowed: list[int]) -> Distribution:
        return [(a, 1.0 / len(allowed)) for a in allowed]

    def learn(self, event: JoinedEvent) -> None:
        pass

    def close(self) -> None:
        pass


class Logged(Uniform):
    """The logging policy: its own logged ranking (so weights are exactly 1)."""

    name = "logged"

    def distribution(self, event: JoinedEvent, k: int, allowed: list[int]) -> Distribution:
        choice = event.decision.choices[k]
        if not event.decision.chosen_only:
            return list(choice.ranking)
        # Only pi(a_logged) = mu(a_logged) is known. The rest of the mass is put on
        # the other collections so the row is a distribution; the replay refuses
        # every estimator that would read it (DM, the DR family) on such events.
        others = [a for a in allowed if a != choice.action]
        if not others:
            return [(choice.action, 1.0)]
        return [(choice.action, choice.probability)] + [(a, (1 - choice.probability) / len(others)) for a in others]


class Baseline(Uniform):
    """The merchandiser's rule: slot default if available, else first available."""

    name = "baseline"

    def distribution(self, event: JoinedEvent, k: int, allowed: list[int]) -> Distribution:
        default = event.decision.inp.slots[k].default_collection
        candidates = event.decision.inp.candidates
        for a in allowed:
            if default and candidates[a].id == default:
                return [(a, 1.0)]
        return [(allowed[0], 1.0)]


class VWTarget:
    """A VW policy valued before it learns from each event (progressive
    validation); with ``frozen`` it never learns (a saved model)."""

    def __init__(self, name: str, settings: LearningSettings, model_path: Path | None = None,
                 frozen: bool = False):
        self.name = name
        self.frozen = frozen
        try:
            self.policy = Policy(settings, model_path=model_path)
        except RuntimeError as exc:  # VW's error for an unreadable model
            raise TargetError(f"policy '{name}': VW cannot load it: {exc}") from None

    def distribution(self, event: JoinedEvent, k: int, allowed: list[int]) -> Distribution:
        return self.policy.slot_distribution(event.decision.inp, k, allowed)

    def learn(self, event: JoinedEvent) -> None:
        if not self.frozen:
            self.policy.learn(event.decision.inp, event.decision.choices, event.rewards)

    def close(self) -> None:
        self.policy.close()


class ExternalProbabilities(Uniform):
    """Probabilities computed elsewhere, one JSON line per (event, slot)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = f"probs:{self.path.name}"
        self.table: dict[tuple[str, str], tuple[int, dict[str, float]]] = {}
        self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{self.path}:{number}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TargetError(f"{where}: not JSON ({exc.msg})") from None
                if not isinstance(rec, dict) or not {"event_id", "slot_id", "probabilities"} <= set(rec):
                    raise TargetError(f"{where}: needs event_id, slot_id and probabilities")
                probs = rec["probabilities"]
                if not isinstance(probs, dict) or not probs:
                    raise TargetError(f"{where}: probabilities must be a non-empty {{collection_id: p}} object")
                clean: dict[str, float] = {}
                for cid, p in probs.items():
                    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 0:
                        raise TargetError(f"{where}: probability of '{cid}' is {p!r}, not a number >= 0")
                    clean[str(cid)] = float(p)
                total = sum(clean.values())
                if abs(total - 1.0) > PROB_TOLERANCE:
                    raise TargetError(f"{where}: probabilities sum to {total:.6g}, not 1 (tolerance {PROB_TOLERANCE})")
                key = (str(rec["event_id"]), str(rec["slot_id"]))
                if key in self.table:
                    raise TargetError(f"{where}: event {key[0]} slot {key[1]} already given on line "
                                      f"{self.table[key][0]}")
                self.table[key] = (number, clean)

    def check_events(self, event_ids: set[str]) -> None:
        """Refuse lines about events the log does not have (a wrong file)."""
        for (event_id, _), (number, _) in self.table.items():
            if event_id not in event_ids:
                raise TargetError(f"{self.path}:{number}: event {event_id} is not in the log")

    def distribution(self, event: JoinedEvent, k: int, allowed: list[int]) -> Distribution:
        d = event.decision
        slot_id = d.choices[k].slot_id
        key = (d.event_id, slot_id)
        if key not in self.table:
            raise TargetError(f"{self.path}: no probabilities for event {d.event_id} slot {slot_id}")
        number, probs = self.table[key]
        index = {c.id: a for a, c in enumerate(d.inp.candidates)}
        allowed_set = set(allowed)
        out = []
        for cid, p in probs.items():
            if cid not in index:
                raise TargetError(f"{self.path}:{number}: collection '{cid}' is not a candidate of event {d.event_id}")
            if index[cid] not in allowed_set:
                if p > 0:
                    raise TargetError(f"{self.path}:{number}: collection '{cid}' gets p={p:g} but is not "
                                      f"available in slot {slot_id} (not eligible, or taken by an earlier slot)")
                continue
            out.append((index[cid], p))
        total = sum(p for _, p in out)
        return [(a, p / total) for a, p in out]


def make_target(spec: TargetSpec) -> Target:
    """A fresh target for one pass over a log."""
    if spec.kind == "uniform":
        return Uniform()
    if spec.kind == "logged":
        return Logged()
    if spec.kind == "baseline":
        return Baseline()
    if spec.kind == "vw":
        return VWTarget(spec.label, spec.settings or LearningSettings())
    if spec.kind == "model":
        return VWTarget(spec.label, spec.settings or LearningSettings(), spec.path, frozen=True)
    if spec.kind == "probs":
        assert spec.path is not None
        return ExternalProbabilities(spec.path)
    raise TargetError(f"unknown target kind {spec.kind!r}")
