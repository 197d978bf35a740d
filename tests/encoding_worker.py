"""A separate process that checks one generated example per input line: either
validation refuses its features, or VW learns exactly the same model from the
text form (serving's) and from the DSJSON form (the learner's).

Run as ``python tests/encoding_worker.py``; reads one JSON object per line
(``{"context": [[group, {feature: value}], ...], "slot": [...], "collection":
[...]}``) and answers one per line. It is a process of its own so that an
input that crashes VW shows up as a dead worker, not as a dead test run."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from bandit.logformat.events import DecisionEvent, JoinedEvent, dumps, joined_to_dsjson
from bandit.features import Candidate, FeatureError, FeatureGroup, SlotSpec, check_groups
from bandit.decision import DecisionInput, SlotChoice
from bandit.policy import LogLearner, Policy
from bandit.vwargs import LearningSettings

SETTINGS = LearningSettings()


def _groups(raw: list, where: str) -> tuple[FeatureGroup, ...]:
    return check_groups([FeatureGroup(name, features) for name, features in raw], where)


def _example(raw: dict) -> tuple[DecisionInput, tuple[SlotChoice, ...]]:
    inp = DecisionInput(_groups(raw["context"], "context"), (SlotSpec("s0", _groups(raw["slot"], "slot 's0'")),),
                        (Candidate("c0", _groups(raw["collection"], "collection 'c0'")), Candidate("c1")))
    return inp, (SlotChoice("s0", 0, 0.5, ((0, 0.5), (1, 0.5))),)


def check(raw: dict, scratch: Path) -> dict:
    """``{"refused": message}`` or ``{"same": bool}`` (the two models' bytes);
    ``main`` answers ``{"error": ...}`` when VW raised."""
    try:
        inp, choices = _example(raw)
    except FeatureError as exc:
        return {"refused": str(exc)}
    text = Policy(SETTINGS)
    text.learn(inp, choices, (1.0,))
    text.save(scratch / "text.vw")
    text.decide(inp, "serving")  # serving reads the text form too
    joined = JoinedEvent(DecisionEvent("e", 1.7e9, "default", "online", "0", inp, choices), (1.0,), (True,))
    log = LogLearner(SETTINGS)
    log.learn_line(dumps(joined_to_dsjson(joined)))
    log.save(scratch / "dsjson.vw")
    return {"same": (scratch / "text.vw").read_bytes() == (scratch / "dsjson.vw").read_bytes()}


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        for line in sys.stdin:
            try:
                answer = check(json.loads(line), Path(scratch))
            except Exception as exc:  # VW refusing an accepted example is a failure too, reported
                answer = {"error": repr(exc)}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
