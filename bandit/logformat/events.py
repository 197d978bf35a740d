"""Events and the log format: the one place that knows how they look on disk.

Two kinds of file, both one JSON object per line:

* the **event log** (what happened, in order): ``decision``, ``reward`` and
  ``activate`` records, written before the server answers, and ``unserved``
  (a decision whose caller was gone by the time it was logged);
* the **joined log**: one VW DSJSON object per decision with its aggregated
  rewards, in the conditional-contextual-bandit layout, so that
  ``python -m vowpalwabbit --dsjson --ccb_explore_adf -d FILE`` trains on it as
  it is. Fields VW does not know start with ``_`` and are ignored by it.
  Collections are listed in learning order (each slot's chosen one first, see
  :func:`bandit.policy.learning_order`) so that plain VW learns the server's
  model; ``_served`` maps them back to the order served, which readers restore.

Readers skip torn lines (a crash mid-write), wherever they are in a file,
with a warning naming the file and line, and count them; anything else
malformed fails with the file and line named.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import orjson

from bandit.features import (
    ACTION,
    CONTEXT,
    SLOT,
    Candidate,
    FeatureGroup,
    FeatureValue,
    SlotSpec,
    context_spaces,
    groups_from_dict,
    groups_to_dict,
    split_namespace,
)
from bandit.lru import IdentityLRU
from bandit.decision import DecisionInput, SlotChoice
from bandit.learning_order import LearningExample, learning_order, served_order

log = logging.getLogger(__name__)


class LogFormatError(ValueError):
    """A line that is not a valid event; the message names file and line."""


@dataclass(frozen=True)
class DecisionEvent:
    """Everything needed to learn from a decision and to evaluate other
    policies on it."""

    event_id: str
    timestamp: float
    surface: str
    mode: str
    model_version: str
    inp: DecisionInput
    choices: tuple[SlotChoice, ...]
    deferred: bool = False
    # Only the chosen collections' propensities are known (an imported
    # single-choice log): each ranking is the chosen action alone, and the
    # logging policy's distribution over the others is unknown, not uniform.
    chosen_only: bool = False


@dataclass(frozen=True)
class RewardEvent:
    event_id: str
    slot_id: str
    value: float
    timestamp: float


@dataclass(frozen=True)
class ActivationEvent:
    event_id: str
    timestamp: float


@dataclass(frozen=True)
class UnservedEvent:
    """The decision logged just before under this id never reached its caller
    (its deadline passed or it cancelled while the decision was made): the
    joiner drops it, so it is never learned as shown-but-not-clicked."""

    event_id: str
    timestamp: float


Event = DecisionEvent | RewardEvent | ActivationEvent | UnservedEvent


@dataclass(frozen=True)
class JoinedEvent:
    """A decision with one aggregated reward per slot; ``observed[k]`` is False
    where no reward came and the default was applied."""

    decision: DecisionEvent
    rewards: tuple[float, ...]
    observed: tuple[bool, ...]
    observations: tuple[tuple[float, ...], ...] = field(default=())
    # The probability that a decision like this one was left out of the joined
    # log (``learner.sample_rate`` < 1): VW's DSJSON ``pdrop``. VW weights a
    # kept example by 1 / (1 - pdrop), and so do the off-policy estimators,
    # so learning and evaluation on the kept lines stay unbiased.
    pdrop: float = 0.0


# --- event log records ------------------------------------------------------

def event_to_record(event: Event) -> dict[str, Any]:
    if isinstance(event, RewardEvent):
        return {"kind": "reward", "id": event.event_id, "slot": event.slot_id,
                "value": event.value, "ts": event.timestamp}
    if isinstance(event, ActivationEvent):
        return {"kind": "activate", "id": event.event_id, "ts": event.timestamp}
    if isinstance(event, UnservedEvent):
        return {"kind": "unserved", "id": event.event_id, "ts": event.timestamp}
    inp = event.inp
    record = {
        "kind": "decision", "id": event.event_id, "ts": event.timestamp,
        "surface": event.surface, "mode": event.mode, "model": event.model_version,
        "deferred": event.deferred,
        "context": groups_to_dict(inp.context),
        "slots": [{"id": s.id, "groups": groups_to_dict(s.groups), "default": s.default_collection}
                  for s in inp.slots],
        "candidates": [{"id": c.id, "groups": groups_to_dict(c.groups)} for c in inp.candidates],
        "eligible": [list(e) if e is not None else None for e in inp.eligible],
        "choices": [_choice_record(c, [[a, p] for a, p in c.ranking]) for c in event.choices],
    }
    if event.chosen_only:
        record["chosen_only"] = True
    return record


def _choice_record(c: SlotChoice, rank: Any) -> dict[str, Any]:
    return {"slot": c.slot_id, "a": c.action, "p": c.probability, "rank": rank, "top": c.model_top}


class LineRef(NamedTuple):
    """Where one log line is (byte offset and length in an append-only file):
    a pending decision from another process's log is kept as this, ~100 bytes
    instead of its line (kilobytes), and read back when it joins. The path is
    text, so the plain tuple the joiner stores it as holds only atoms, which
    the garbage collector stops tracking (a NamedTuple it always tracks)."""

    path: str
    offset: int
    length: int

    def read(self) -> str:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            return fh.read(self.length).decode("utf-8")


def event_line(event: Event) -> str:
    """The event's log line: ``dumps(event_to_record(event))`` (a test checks),
    with each candidate's part encoded once per candidate object. A decision
    names up to hundreds of candidates, and the same objects (the catalog's,
    the server's known request candidates) come back request after request.
    The choices (every slot's ranking: most of the line) are encoded apart
    from the head, whose ``eligible`` nulls would send it the slow way (see dumps)."""
    if not isinstance(event, DecisionEvent):
        return dumps(event_to_record(event))
    record = event_to_record(replace(event, inp=replace(event.inp, candidates=()), choices=()))
    del record["candidates"], record["choices"]
    # the ranking's pairs as they are: both encoders write a tuple as an array
    choices = dumps([_choice_record(c, c.ranking) for c in event.choices])
    chosen_only = ',"chosen_only":true' if record.pop("chosen_only", False) else ""
    head = dumps(record)
    return f'{head[:-1]},"choices":{choices}{chosen_only},"candidates":[{_candidates_json(event.inp.candidates)}]}}'


# At most 64 lists of at most 1 MB of JSON each are kept (64 MB).
_CANDIDATES_JSON: IdentityLRU[str] = IdentityLRU(64)
_CANDIDATES_JSON_MAX = 1 << 20
_CANDIDATE_JSON: IdentityLRU[str] = IdentityLRU(4096)  # a few KB each


def _candidates_json(candidates: tuple[Candidate, ...]) -> str:
    """A decision's candidates as JSON: for a list the server or the catalog
    hands out again (the same tuple), one lookup instead of one per candidate."""
    text = _CANDIDATES_JSON.get(candidates)
    if text is None:
        text = ",".join(_candidate_json(c) for c in candidates)
        if len(text) <= _CANDIDATES_JSON_MAX:
            _CANDIDATES_JSON.put(candidates, text)
    return text


def _candidate_json(c: Candidate) -> str:
    text = _CANDIDATE_JSON.get(c)
    if text is None:
        text = dumps({"id": c.id, "groups": groups_to_dict(c.groups)})
        _CANDIDATE_JSON.put(c, text)
    return text


def event_from_record(rec: Mapping[str, Any]) -> Event:
    kind = rec.get("kind")
    if kind == "reward":
        return RewardEvent(rec["id"], rec["slot"], float(rec["value"]), float(rec["ts"]))
    if kind == "activate":
        return ActivationEvent(rec["id"], float(rec["ts"]))
    if kind == "unserved":
        return UnservedEvent(rec["id"], float(rec["ts"]))
    if kind != "decision":
        raise LogFormatError(f"unknown event kind {kind!r}")
    inp = DecisionInput(
        context=groups_from_dict(rec["context"]),
        slots=tuple(SlotSpec(s["id"], groups_from_dict(s["groups"]), s.get("default", "")) for s in rec["slots"]),
        candidates=tuple(Candidate(c["id"], groups_from_dict(c["groups"])) for c in rec["candidates"]),
        eligible=tuple(tuple(e) if e is not None else None for e in rec.get("eligible", [])),
    )
    choices = tuple(SlotChoice(c["slot"], int(c["a"]), float(c["p"]),
                               tuple((int(a), float(p)) for a, p in c["rank"]), int(c.get("top", -1)))
                    for c in rec["choices"])
    return DecisionEvent(rec["id"], float(rec["ts"]), rec["surface"], rec["mode"], rec["model"],
                         inp, choices, bool(rec.get("deferred", False)), bool(rec.get("chosen_only", False)))


def dumps(record: Any) -> str:
    """One log line (no newline); NaN is refused, never written.

    orjson (~10x faster than json at a decision's 150 ranking pairs) writes
    the same JSON values (numbers in their shortest round-trip form, strings
    as UTF-8 rather than ``\\u`` escapes, which every reader, VW's DSJSON
    parser included, reads alike), but writes NaN and infinities as null. So
    output holding a null, and what orjson refuses (a lone surrogate from a
    surrogateescape'd line, an int beyond 64 bits), take ``json.dumps``,
    which refuses NaN and escapes the rest as before."""
    try:
        out = orjson.dumps(record)
    except TypeError:  # orjson.JSONEncodeError
        out = b"null"
    if b"null" not in out:
        return out.decode("utf-8")
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


# --- joined log: VW DSJSON (ccb) --------------------------------------------

EPOCH_RANGE = (-62135596800.0, 253402300799.0)  # epoch seconds :func:`iso` can write (years 1..9999)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


CHOSEN_ONLY = "_p_chosen_only"  # joined-log flag: only the chosen actions' propensities are known


def joined_to_dsjson(joined: JoinedEvent) -> dict[str, Any]:
    """The joined line in learning order (:func:`bandit.policy.learning_order`),
    so that plain ``vw --dsjson --ccb_explore_adf`` on the log learns what the
    server learned; ``_served`` (ignored by VW) maps each listed collection back
    to its served index, which :func:`joined_from_dsjson` restores."""
    d = joined.decision
    inp, choices, served = learning_order(d.inp, d.choices)
    c: dict[str, Any] = dict(context_spaces(inp.context))
    c["_multi"] = [cand.spaces() for cand in inp.candidates]
    slots = []
    for k, slot in enumerate(inp.slots):
        entry: dict[str, Any] = {"_id": slot.id, **slot.spaces()}
        if inp.eligible and inp.eligible[k] is not None:
            entry["_inc"] = list(inp.eligible[k])
        slots.append(entry)
    c["_slots"] = slots
    outcomes = []
    for k, choice in enumerate(choices):
        others = [(a, p) for a, p in choice.ranking if a != choice.action]
        obs = joined.observations[k] if joined.observations else ()
        outcomes.append({
            "_id": choice.slot_id,
            "_label_cost": -joined.rewards[k],
            "_a": [choice.action] + [a for a, _ in others],
            "_p": [choice.probability] + [p for _, p in others],
            "_o": [{"v": v} for v in obs],
            "_default": not joined.observed[k],
        })
    line = {
        "Version": "1", "EventId": d.event_id, "Timestamp": iso(d.timestamp),
        "_surface": d.surface, "_mode": d.mode, "_model": d.model_version,
        "_defaults": [s.default_collection for s in inp.slots],
        "c": c, "_outcomes": outcomes,
    }
    if joined.pdrop:
        line["pdrop"] = joined.pdrop
    if d.chosen_only:  # VW ignores it; _a/_p then hold the chosen action alone
        line[CHOSEN_ONLY] = True
    if served != tuple(range(len(served))):
        line["_served"] = list(served)
    return line


def _groups_from_spaces(role: str, spaces: Mapping[str, Any]) -> tuple[str | None, tuple[FeatureGroup, ...]]:
    identity = None
    groups = []
    for ns, feats in spaces.items():
        if ns.startswith("_") or not isinstance(feats, dict):
            continue
        r, group = split_namespace(ns)
        if r != role:
            continue
        if not group:
            ident = next(iter(feats), "")
            identity = ident.partition("=")[2] if ident.startswith("id=") else ident
            continue
        groups.append(FeatureGroup(group, {n.partition("=")[0]: _decode(n, v) for n, v in feats.items()}))
    return identity, tuple(groups)


def _decode(name: str, value: Any) -> FeatureValue:
    if "=" in name:
        return name.partition("=")[2]
    return float(value)


def joined_from_dsjson(obj: Mapping[str, Any]) -> JoinedEvent:
    """Rebuild a joined event from a DSJSON line (ccb layout, or the cb layout
    with ``_label_*`` fields, read as a single slot); LogFormatError if it is
    not one."""
    try:
        return _joined_from_dsjson(obj)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise LogFormatError(f"not a joined DSJSON event: {exc!r}") from None


def _joined_from_dsjson(obj: Mapping[str, Any]) -> JoinedEvent:
    c = obj["c"]
    _, context = _groups_from_spaces(CONTEXT, c)
    candidates = []
    for i, spaces in enumerate(c.get("_multi", [])):
        ident, groups = _groups_from_spaces(ACTION, spaces)
        candidates.append(Candidate(ident if ident is not None else str(i), groups))
    if "_outcomes" in obj:
        return _ccb_joined(obj, c, context, tuple(candidates))
    return _cb_joined(obj, context, tuple(candidates))


def _ccb_joined(obj, c, context, candidates) -> JoinedEvent:
    slots, eligible = [], []
    defaults = obj.get("_defaults") or [""] * len(c.get("_slots", []))
    for k, spaces in enumerate(c.get("_slots", [])):
        _, groups = _groups_from_spaces(SLOT, spaces)
        slots.append(SlotSpec(str(spaces.get("_id", f"slot_{k}")), groups, defaults[k] if k < len(defaults) else ""))
        inc = spaces.get("_inc")
        eligible.append(tuple(int(i) for i in inc) if inc is not None else None)
    choices, rewards, observed, observations = [], [], [], []
    for k, out in enumerate(obj["_outcomes"]):
        actions, probs = out["_a"], out["_p"]
        if not isinstance(actions, list):
            actions, probs = [actions], [probs]
        ranking = tuple(sorted(zip(map(int, actions), map(float, probs)), key=lambda ap: -ap[1]))
        slot_id = str(out.get("_id", slots[k].id if k < len(slots) else k))
        choices.append(SlotChoice(slot_id, int(actions[0]), float(probs[0]), ranking))
        rewards.append(-float(out.get("_label_cost", 0.0)))
        obs = tuple(float(o["v"]) for o in out.get("_o", []) if isinstance(o, dict) and "v" in o)
        observations.append(obs)
        observed.append(not out.get("_default", not obs))
    inp = DecisionInput(context, tuple(slots), candidates,
                        tuple(eligible) if any(e is not None for e in eligible) else ())
    choices = tuple(choices)
    if "_served" in obj:
        inp, choices = served_order(LearningExample(inp, choices, _permutation(obj["_served"], len(candidates))))
    decision = DecisionEvent(str(obj.get("EventId", "")), _timestamp(obj), obj.get("_surface", "default"),
                             obj.get("_mode", "online"), str(obj.get("_model", "")), inp, choices,
                             chosen_only=bool(obj.get(CHOSEN_ONLY, False)))
    return JoinedEvent(decision, tuple(rewards), tuple(observed), tuple(observations), _pdrop(obj))


def _pdrop(obj: Mapping[str, Any]) -> float:
    """The line's drop probability (VW's ``pdrop``, 0 when absent), in [0, 1)
    as VW requires: a kept line cannot have been certain to be dropped."""
    pdrop = float(obj.get("pdrop", 0.0))
    if not 0.0 <= pdrop < 1.0:
        raise ValueError(f"pdrop {pdrop!r} is not in [0, 1)")
    return pdrop


def _permutation(raw: Any, n: int) -> tuple[int, ...]:
    """``_served``: each listed collection's served index, a permutation of 0..n-1."""
    served = tuple(int(a) for a in raw)
    if sorted(served) != list(range(n)):
        raise ValueError(f"_served {list(served)} is not a permutation of the {n} collections")
    return served


def _cb_joined(obj, context, candidates) -> JoinedEvent:
    actions = [int(a) - 1 for a in obj["a"]]  # cb DSJSON actions are 1-based
    probs = [float(p) for p in obj["p"]]
    chosen = int(obj["_labelIndex"]) if "_labelIndex" in obj else int(obj["_label_Action"]) - 1
    prob = float(obj.get("_label_probability", probs[actions.index(chosen)] if chosen in actions else math.nan))
    ranking = tuple(sorted(zip(actions, probs), key=lambda ap: -ap[1]))
    slot = SlotSpec("slot_0")
    choice = SlotChoice(slot.id, chosen, prob, ranking)
    inp = DecisionInput(context, (slot,), candidates)
    decision = DecisionEvent(str(obj.get("EventId", "")), _timestamp(obj), obj.get("_surface", "default"),
                             obj.get("_mode", "online"), str(obj.get("_model", "")), inp, (choice,))
    return JoinedEvent(decision, (-float(obj.get("_label_cost", 0.0)),), (True,), ((),), _pdrop(obj))


def _timestamp(obj: Mapping[str, Any]) -> float:
    ts = obj.get("Timestamp")
    return parse_iso(ts) if isinstance(ts, str) else 0.0


# --- reading files -----------------------------------------------------------

@dataclass
class SkippedLines:
    """Torn lines a reader skipped: where each was (file and line), so a
    caller can report how many and which."""

    where: list[tuple[str, int]] = field(default_factory=list)

    def add(self, path: Path, number: int) -> None:
        self.where.append((str(path), number))

    def __len__(self) -> int:
        return len(self.where)

    def summary(self, shown: int = 5) -> str:
        places = ", ".join(f"{p}:{n}" for p, n in self.where[:shown])
        more = f" and {len(self.where) - shown} more" if len(self.where) > shown else ""
        return f"{len(self.where)} torn line(s) skipped ({places}{more})"


def read_lines(path: Path, strict: bool = True,
               skipped: SkippedLines | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each line; gzip by suffix.

    A torn line (a crash mid-write: not valid JSON), wherever it is in the
    file (a server seals a torn last line and appends after it), is skipped
    with a warning naming the file and line, and counted in ``skipped``. A
    line that is valid JSON but not an object is not torn but a wrong file:
    LogFormatError naming file and line, or skipped too when not ``strict``
    (the server's own logs)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="surrogateescape") as fh:
        for number, line in enumerate(fh, start=1):
            obj = _parse(path, number, line, strict, skipped)
            if obj is not None:
                yield number, obj


def _parse(path: Path, number: int, line: str, strict: bool,
           skipped: SkippedLines | None) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        if not line.strip():
            return None  # a blank line holds nothing
        log.warning("%s:%d: torn line skipped (%d bytes: %s)", path, number, len(line), exc.msg)
        if skipped is not None:
            skipped.add(path, number)
        return None
    if isinstance(obj, dict):
        return obj
    message = f"{path}:{number}: not a JSON object"
    if strict:
        raise LogFormatError(message)
    log.warning("%s; line skipped", message)
    if skipped is not None:
        skipped.add(path, number)
    return None


def read_joined(paths: Sequence[Path], skipped: SkippedLines | None = None) -> Iterator[JoinedEvent]:
    """The joined events of ``paths`` in order; torn lines are skipped and
    counted in ``skipped`` (see read_lines)."""
    for path in paths:
        for number, obj in read_lines(Path(path), skipped=skipped):
            try:
                yield joined_from_dsjson(obj)
            except LogFormatError as exc:
                raise LogFormatError(f"{path}:{number}: {exc}") from None
