"""Restart time against history: how long `placement serve --workers 1` takes
from launch to answering a health check, on a data directory holding N joined
decisions (and their rewards) of history, with the checkpoint a clean stop
leaves and without one (every log read from its start).

    .venv/bin/python -m bench.restart                          # 20k, 100k, 1M; full reads up to 100k
    .venv/bin/python -m bench.restart --sizes 20000 --runs 1   # quick

The history is written directly in the log format (bandit.logformat.events),
not through gRPC: the event log (decision and reward lines), the joined log
(one DSJSON line per decision), a model version that has learned all of it
(joined_through = N) and the checkpoint as the engine's clean stop writes it
(logs read to their ends, nothing pending, the ids closed lately).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bandit.decision import DecisionInput, Mode, SlotChoice
from bandit.features import Candidate, FeatureGroup, SlotSpec
from bandit.joiner import Joiner
from bandit.logformat.events import (DecisionEvent, JoinedEvent, RewardEvent, dumps, event_line, event_to_record,
                                     joined_to_dsjson)
from server.checkpoint import FILE_NAME, write_checkpoint
from server.config import load_config
from server.engine import Engine


def _templates(n: int, seed: int) -> list[DecisionEvent]:
    """A few distinct decisions (10 collections x 2 slots, realistic feature counts) to vary ids and times of."""
    rng = random.Random(seed)
    cands = tuple(Candidate(f"collection-{i}", (FeatureGroup("collection", {
        "kind": rng.choice(["seasonal", "viral", "regular"]), "price": rng.random(), "brand": f"b{i}"}),))
        for i in range(10))
    slots = (SlotSpec("homepage"), SlotSpec("email"))
    out = []
    for _ in range(n):
        context = (FeatureGroup("customer", {"segment": f"s{rng.randrange(8)}", "recency": rng.random()}),
                   FeatureGroup("session", {"device": rng.choice(["ios", "android", "web"])}))
        free = list(range(len(cands)))
        choices = []
        for spec in slots:
            a = free.pop(rng.randrange(len(free)))
            p = 1.0 / (len(free) + 1)
            choices.append(SlotChoice(spec.id, a, p, tuple([(a, p)] + [(b, p) for b in free])))
        out.append(DecisionEvent("t", 0.0, "default", Mode.ONLINE.value, "1",
                                 DecisionInput(context, slots, cands), tuple(choices)))
    return out


def make_history(data: Path, decisions: int, seed: int = 0) -> None:
    """N decisions, a reward each, all joined and learned; the clean stop's checkpoint."""
    config = load_config(None, port=0, data_dir=data)
    Engine(config).stop()  # the layout and the first model version
    templates = _templates(100, seed)
    start = time.time() - decisions * 0.01 - 3600
    events_path, joined_path = data / "events" / "events-000001.jsonl", data / "joined" / "default" / "joined-000001.dsjson"
    with open(events_path, "a") as events, open(joined_path, "a") as joined:
        for t in range(decisions):
            event = replace(templates[t % len(templates)], event_id=f"e{t}", timestamp=start + t * 0.01)
            events.write(event_line(event) + "\n")
            events.write(dumps(event_to_record(RewardEvent(event.event_id, "homepage", 1.0, event.timestamp + 1))) + "\n")
            item = JoinedEvent(event, (1.0, 0.0), (True, False), ((1.0,), ()))
            joined.write(dumps(joined_to_dsjson(item)) + "\n")
    models = data / "models" / "default"
    current = int((models / "CURRENT").read_text())
    meta = json.loads((models / f"v{current:06d}.json").read_text())
    meta.update(examples_learned=decisions, joined_through=decisions)
    (models / f"v{current:06d}.json").write_text(json.dumps(meta))
    closed = Joiner(1.0)
    for t in range(max(0, decisions - 200_000), decisions):
        closed.remember_closed(f"e{t}")
    write_checkpoint(data / FILE_NAME, {
        "written_at": time.time(), "events": {"events": [1, events_path.stat().st_size]},
        "joined": {"default": {"lines": decisions, "at": [1, joined_path.stat().st_size]}},
        "joiner": closed.snapshot()})


def restart_seconds(data: Path) -> float:
    """Launch to the first answered health check (then a clean stop)."""
    started = time.monotonic()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("placement")), "serve", "--workers", "1",
                             "--port", "0", "--data-dir", str(data)], stderr=subprocess.PIPE, text=True)
    try:
        port = next(m.group(1) for line in proc.stderr if (m := re.search(r"serving on 127\.0\.0\.1:(\d+)", line)))
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=600)
        return time.monotonic() - started
    finally:
        proc.terminate()
        assert proc.wait(timeout=600) == 0


def main(sizes: str = typer.Option("20000,100000,1000000", help="Decisions of history, comma-separated."),
         runs: int = typer.Option(3, min=1, help="Restarts per measurement (the median is reported)."),
         full_max: int = typer.Option(100_000, help="Measure the full read (no checkpoint) up to this size.")) -> None:
    print(f"load average at start: {os.getloadavg()}")
    print("| decisions of history | with checkpoint (median s) | without checkpoint (median s) |")
    print("|---|---|---|")
    for size in (int(s) for s in sizes.split(",")):
        work = Path(tempfile.mkdtemp(prefix="placement-bench-restart-"))
        try:
            make_history(work / "data", size)
            saved = (work / "data" / FILE_NAME).read_bytes()
            with_cp = statistics.median(restart_seconds(work / "data") for _ in range(runs))
            without = "-"
            if size <= full_max:
                times = []
                for _ in range(runs):
                    (work / "data" / FILE_NAME).unlink()
                    times.append(restart_seconds(work / "data"))
                without = f"{statistics.median(times):.2f}"
            (work / "data" / FILE_NAME).write_bytes(saved)
            print(f"| {size:,} | {with_cp:.2f} | {without} |", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    typer.run(main)
