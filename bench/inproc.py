"""In-process measurements A, B and C (see bench/README.md).

Each measurement is an object with ``run(seconds) -> decisions per second``;
:func:`measure_interleaved` runs them round-robin so that the machine's noise
hits every variant alike, and reports the median round.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from vowpalwabbit import pyvw

from bandit.catalog import Collection
from bandit.policy import Policy, vw_lines
from bandit.vwargs import LearningSettings, vw_arguments
from bench.workload import Workload, feature_groups, naive_lines

SETTINGS = LearningSettings()  # the server's default surface settings (bench.decide --fill: use_fill)


def use_fill(fill: str) -> None:
    """Measure the in-process variants with ``fill`` (``bench.decide --fill``
    gives the server the same fill in its config file)."""
    global SETTINGS
    SETTINGS = replace(LearningSettings(), fill=fill)


def _loop_rate(step: Callable[[], object], seconds: float) -> float:
    """Call ``step`` until ``seconds`` have passed; decisions per second."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        step()
        n += 1
        now = time.perf_counter()
    return n / (now - start)


class BareVW:
    """A: VW predict on examples parsed outside the timed region.

    VW's ccb reduction appends each predict's slot distributions to the shared
    example (they are only cleared by ``finish_example``), so one parsed example
    cannot simply be predicted over and over. Instead each round parses a batch
    of fresh copies (untimed), then times ``ws.predict(examples)`` on each copy
    (one multi-slot predict, VW's own slot sequencing, plus reading the
    distributions into Python), then finishes them (untimed)."""

    def __init__(self, w: Workload, batch: int | None = None):
        self.ws = pyvw.Workspace(vw_arguments(SETTINGS))
        self.texts = ["\n".join(vw_lines(w.decision_input()))]
        self.slots = w.slots
        # Small batches for big examples: 64 parsed copies of 200 actions no longer
        # fit in cache and predict slows down by ~2x, which is not VW's limit.
        self.batch = batch or max(4, min(32, 1000 // w.candidates))

    def run(self, seconds: float) -> float:
        ws, done, timed = self.ws, 0, 0.0
        while timed < seconds:
            batch = [[ws.parse(t) for t in self.texts] for _ in range(self.batch)]
            start = time.perf_counter()
            for examples in batch:
                for ex in examples:
                    pdfs = ws.predict(ex)
            timed += time.perf_counter() - start
            assert len(pdfs) == self.slots
            for examples in batch:
                for ex in examples:
                    ws.finish_example(ex)
            done += self.batch
        return done / timed

    def close(self) -> None:
        self.ws.finish()


def _draw(pdf, u: float) -> int:
    acc = 0.0
    for action, p in pdf:
        acc += p
        if u < acc:
            return action
    return pdf[-1][0]


class NaivePyvw:
    """B: what a user writes by hand: build the text from the request's dicts,
    ``ws.predict(list_of_lines)`` (one multi-slot ccb predict; VW parses and
    finishes the example), draw one action per slot from VW's distribution."""

    def __init__(self, w: Workload, seed: int):
        self.ws = pyvw.Workspace(vw_arguments(SETTINGS))
        self.w = w
        self.rng = random.Random(seed)

    def step(self) -> list[int]:
        pdfs = self.ws.predict(naive_lines(self.w))
        return [_draw(pdf, self.rng.random()) for pdf in pdfs]

    def run(self, seconds: float) -> float:
        return _loop_rate(self.step, seconds)

    def close(self) -> None:
        self.ws.finish()


class PolicyOnly:
    """C (VW part): ``Policy.decide`` alone: the request's VW text (candidates'
    text and parsed examples kept per candidate object), one multi-slot predict
    with VW's seeded draw, ranking. No logging, no joiner."""

    def __init__(self, w: Workload):
        self.policy = Policy(SETTINGS)
        self.inp = w.decision_input()

    def step(self):
        return self.policy.decide(self.inp, uuid.uuid4().hex)

    def run(self, seconds: float) -> float:
        return _loop_rate(self.step, seconds)

    def close(self) -> None:
        self.policy.close()


class EngineInProc:
    """C: ``Engine.decide(DecideCall(...))`` on a real data directory (event
    log with the default fsync policy, joiner, learner threads running).

    ``catalog=False``: the request carries the candidates with their features
    (as measured through gRPC in D). ``catalog=True``: the candidates are
    registered in the catalog and the request names none, so the engine takes
    the catalog's candidates (and their cached text)."""

    def __init__(self, w: Workload, catalog: bool = False):
        from server.config import load_config
        from server.engine import DecideCall, Engine

        self.dir = Path(tempfile.mkdtemp(prefix="bench-engine-"))
        surfaces = {"default": {"learning": {"fill": SETTINGS.fill}}}
        self.engine = Engine(load_config(None, port=0, data_dir=self.dir, surfaces=surfaces))
        self.engine.start()
        cands = tuple(Collection(c.id, c.groups) for c in w.candidate_tuple())
        if catalog:
            self.engine.catalog.put(Collection(cid, feature_groups(f)) for cid, f in w.collections)
            cands = ()
        self.call = DecideCall("", "default", w.context_groups(), w.slot_tuple(), cands, None, False, None)
        event = self.engine.decide(self.call)
        assert len(event.choices) == w.slots

    def step(self):
        return self.engine.decide(self.call)

    def run(self, seconds: float) -> float:
        return _loop_rate(self.step, seconds)

    def close(self) -> None:
        self.engine.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def measure_interleaved(variants: dict[str, object], rounds: int, seconds: float,
                        warmup: float = 0.2) -> dict[str, dict[str, float]]:
    """Median (and spread) of ``rounds`` interleaved runs of every variant."""
    for v in variants.values():
        v.run(warmup)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, v in variants.items():
            rates[name].append(v.run(seconds))
    return {name: {"rate": statistics.median(r), "min": min(r), "max": max(r), "rounds": len(r)}
            for name, r in rates.items()}


def inproc_variants(w: Workload, seed: int, names: Sequence[str]) -> dict[str, object]:
    make = {
        "A": lambda: BareVW(w),
        "B": lambda: NaivePyvw(w, seed),
        "C_policy": lambda: PolicyOnly(w),
        "C": lambda: EngineInProc(w, catalog=False),
        "C_catalog": lambda: EngineInProc(w, catalog=True),
    }
    return {name: make[name]() for name in names}
