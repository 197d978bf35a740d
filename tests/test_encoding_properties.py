"""Property: whatever features a request carries, validation refuses them, or
the text form (serving) and the DSJSON form (learning) give VW the same
features, checked where it counts: the model VW learns from one example each
way, byte for byte. The examples run in a worker process (encoding_worker.py),
so one that crashed VW would fail the test instead of ending the run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from bandit.features import FeatureError, FeatureGroup, check_groups

WORKER = Path(__file__).with_name("encoding_worker.py")
ROOT = WORKER.parent.parent

# Mostly valid names (else nothing would be learned), some VW's DSJSON parser
# would read as its own fields, and any text at all.
valid_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,12}", fullmatch=True)
names = st.one_of(valid_names, valid_names, valid_names,
                  st.sampled_from(["_label", "_multi", "_slots", "_text", "_labelIndex", "_tag", "_a", "_p", "_x",
                                   "_label_cost", "_inc", "_id", "__aid", "a\n", "a\x00"]),
                  st.text(max_size=12))
any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF)  # surrogates excluded: not UTF-8
printable = st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF, exclude_categories=["Cc", "Cs"])
categories = st.one_of(st.text(printable, max_size=40), st.text(any_char, max_size=40),
                       st.sampled_from(["a b", "x|y:z", "=", "", "\u2028", "\ufeff", "\U0001F600", "a\x00b"]))
numbers = st.one_of(st.floats(width=64), st.floats(width=32, allow_nan=False, allow_infinity=False),
                    st.sampled_from([0.0, -0.0, 1.0, 5e-324, 1e-45, 1e-38, 0.3, 1e-7, 3.4028234663852886e38,
                                     -3.4028234663852886e38, 3.4028235e38, 1e308, 16777217.0]))
features = st.dictionaries(names, st.one_of(numbers, categories), max_size=6)
groups = st.lists(st.tuples(names, features), max_size=3, unique_by=lambda g: g[0])
examples = st.fixed_dictionaries({"context": groups, "slot": groups, "collection": groups})

# What the naming rule accepts, from the whole of Unicode and of float32's range.
acceptable_values = st.one_of(st.text(printable, max_size=40),
                              st.floats(min_value=-3.4028234663852886e38, max_value=3.4028234663852886e38),
                              st.floats(width=32, allow_nan=False, allow_infinity=False))
acceptable_groups = st.lists(st.tuples(valid_names, st.dictionaries(valid_names, acceptable_values, max_size=6)),
                             max_size=3, unique_by=lambda g: g[0])
acceptable = st.fixed_dictionaries({"context": acceptable_groups, "slot": acceptable_groups,
                                    "collection": acceptable_groups})


class Worker:
    """The worker process; restarted after it dies, which is reported."""

    def __init__(self):
        self.proc = None

    def check(self, example: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, str(WORKER)], cwd=ROOT, text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.proc.stdin.write(json.dumps(example) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, f"the learner process died (exit {self.proc.wait()}) on {example!r}"
        return json.loads(answer)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PROPERTY
@given(example=acceptable)
def test_what_the_rule_accepts_is_learned_the_same_both_ways(worker, example):
    answer = worker.check(example)
    assert "refused" not in answer, answer
    assert answer == {"same": True}, f"text and DSJSON learn different models from {example!r}: {answer}"


@PROPERTY
@given(example=examples)
def test_anything_is_refused_or_learned_the_same_both_ways(worker, example):
    answer = worker.check(example)
    event("refused" if "refused" in answer else "learned")
    if "refused" not in answer:
        assert answer == {"same": True}, f"text and DSJSON learn different models from {example!r}: {answer}"


def _accepted(raw_groups) -> bool:
    try:
        check_groups([FeatureGroup(n, f) for n, f in raw_groups], "context")
        return True
    except FeatureError:
        return False


@given(groups)
@settings(max_examples=300, deadline=None)
def test_refusal_is_exactly_the_documented_rule(raw_groups):
    """Accepted means: names fullmatch the rule, categories hold no control
    character or surrogate, numbers are finite within float32's range."""
    def name_ok(n):
        return bool(n) and len(n) <= 128 and n[0].isascii() and n[0].isalnum() and \
            all(c.isascii() and (c.isalnum() or c in "_.-") for c in n)

    def value_ok(v):
        if isinstance(v, str):
            return len(v) <= 256 and not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF
                                             for c in v)
        return math.isfinite(v) and abs(v) <= 3.4028234663852886e38

    expected = all(name_ok(g) and all(name_ok(n) and value_ok(v) for n, v in f.items()) for g, f in raw_groups)
    assert _accepted(raw_groups) == expected
