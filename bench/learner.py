"""Learner throughput: the engine's online learner against plain VW reading the
same joined log (`python -m vowpalwabbit --dsjson --ccb_explore_adf`), with the
same learning arguments, measured side by side in one run.

    .venv/bin/python -m bench.learner                   # 50k decisions x 3 slots x 20 collections
    .venv/bin/python -m bench.learner --decisions 5000  # quick
"""

from __future__ import annotations

import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

from bandit.logformat.events import DecisionEvent, JoinedEvent, dumps, joined_from_dsjson, joined_to_dsjson
from bandit.features import Candidate, FeatureGroup, SlotSpec
from bandit.decision import DecisionInput, Mode, SlotChoice
from bandit.vwargs import LearningSettings, vw_arguments
from server.config import LearnerConfig
from server.learner import SurfaceModel
from server.modelstore import ModelStore


def make_log(path: Path, decisions: int, collections: int, slots: int, seed: int) -> None:
    """A joined log with realistic feature counts and uniform logged choices."""
    rng = random.Random(seed)
    cands = tuple(Candidate(f"collection-{i}", (FeatureGroup("collection", {
        "kind": rng.choice(["seasonal", "viral", "regular"]), "price": rng.random(), "age_days": rng.random(),
        "brand": f"b{rng.randrange(20)}", "margin": rng.random(), "rating": rng.random()}),))
        for i in range(collections))
    slot_specs = tuple(SlotSpec(s, (FeatureGroup("layout", {"position": float(k), "size": "large" if k == 0 else "small"}),))
                       for k, s in enumerate(["homepage", "email", "detail_page"][:slots]))
    with open(path, "w") as fh:
        for t in range(decisions):
            context = (FeatureGroup("customer", {"segment": f"s{rng.randrange(8)}", "recency": rng.random(),
                                                 "frequency": rng.random(), "tenure": rng.random()}),
                       FeatureGroup("session", {"device": rng.choice(["ios", "android", "web"]),
                                                "hour": rng.random(), "weekday": f"d{rng.randrange(7)}"}),
                       FeatureGroup("page", {"category": f"c{rng.randrange(12)}", "depth": rng.random()}))
            inp = DecisionInput(context, slot_specs, cands)
            free = list(range(collections))
            choices = []
            for spec in slot_specs:
                a = free.pop(rng.randrange(len(free)))
                p = 1.0 / (len(free) + 1)
                choices.append(SlotChoice(spec.id, a, p, tuple([(a, p)] + [(b, p) for b in free])))
            rewards = tuple(float(rng.random() < 0.1) for _ in slot_specs)
            event = DecisionEvent(f"e{t}", 1.7e9 + t, "default", Mode.ONLINE.value, "1", inp, tuple(choices))
            fh.write(dumps(joined_to_dsjson(JoinedEvent(event, rewards, (True,) * slots, ()))) + "\n")


def main(decisions: int = typer.Option(50_000, help="Joined decisions in the generated log."),
         collections: int = typer.Option(20, help="Candidate collections per decision."),
         slots: int = typer.Option(3, min=1, max=3, help="Slots per decision."),
         seed: int = typer.Option(0, help="Seed of the generated log.")) -> None:
    work = Path(tempfile.mkdtemp(prefix="placement-bench-learner-"))
    log_path = work / "joined.dsjson"
    make_log(log_path, decisions, collections, slots, seed)
    lines = log_path.read_text().splitlines()
    settings = LearningSettings()
    args = vw_arguments(settings, dsjson=True)

    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "vowpalwabbit", *shlex.split(args), "-d", str(log_path)],
                         capture_output=True, text=True)
    vw_seconds = time.perf_counter() - started
    assert run.returncode == 0, run.stderr

    events = [joined_from_dsjson(__import__("json").loads(line)) for line in lines]  # the learner gets these parsed
    model = SurfaceModel("default", settings, Mode.ONLINE, ModelStore(work / "models"), LearnerConfig())
    started = time.perf_counter()
    for joined, line in zip(events, lines):
        model.learn(joined, line)
    ours_seconds = time.perf_counter() - started
    model.publish()

    vw_rate, ours_rate = decisions / vw_seconds, decisions / ours_seconds
    typer.echo(f"log: {decisions} decisions x {slots} slots x {collections} collections ({log_path.stat().st_size >> 20} MiB)")
    typer.echo(f"python -m vowpalwabbit {args} -d FILE: {vw_seconds:6.2f} s  {vw_rate:9.0f} events/s (process start included)")
    typer.echo(f"engine online learner (SurfaceModel.learn):  {ours_seconds:6.2f} s  {ours_rate:9.0f} events/s")
    typer.echo(f"ratio learner / vw: {ours_rate / vw_rate:.2f} (target >= 0.8)")


if __name__ == "__main__":
    typer.run(main)
