"""Soak: a long mixed load (decisions with rewards, some deferred and activated)
against a real `placement serve` process; reports RSS over time, errors by
status, and reconciles the logs exactly: every acknowledged decision and reward
is in the event log, every decision is joined once, every joined example is
learned once.

    .venv/bin/python -m bench.soak                 # 1M decisions (about 20-30 min on 2 cores)
    .venv/bin/python -m bench.soak --decisions 20000
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import typer

from bench.procs import rss_mib

CONFIG = """
[join]
window_seconds = 2.0
tick_seconds = 0.1
[learner]
publish_every_examples = 20000
publish_every_seconds = 15
"""
COLLECTIONS = [f"collection-{i}" for i in range(20)]
SLOTS = ["homepage", "email", "detail_page"]


def _rss_by_process(pid: int) -> dict[str, float]:
    """MiB per process, named: the server's main process is the coordinator."""
    return {("coordinator" if p == pid else f"worker-{p}"): mib for p, mib in rss_mib(pid).items()}


def _client(target: str, seed: int, count: int, out: mp.Queue) -> None:
    """One load process: its own channel, closed-loop."""
    import grpc

    from server.client import PlacementClient

    rng = random.Random(seed)
    acked = {"decisions": 0, "rewards": 0, "activations": 0, "deferred_unactivated": 0}
    errors: Counter = Counter()
    with PlacementClient(target, timeout=10) as client:
        for i in range(count):
            event_id = f"s{seed}-{i}"
            deferred = rng.random() < 0.05
            try:
                result = client.decide({"customer": {"segment": f"seg{rng.randrange(8)}", "recency": rng.random()}},
                                       SLOTS, event_id=event_id, deferred=deferred)
                acked["decisions"] += 1
                if deferred:
                    if rng.random() < 0.5:
                        client.activate(event_id)
                        acked["activations"] += 1
                    else:
                        acked["deferred_unactivated"] += 1
                for slot in result.slots:
                    if rng.random() < 0.2:
                        client.reward(event_id, 1.0, slot_id=slot.slot_id)
                        acked["rewards"] += 1
            except grpc.RpcError as err:
                errors[err.code().name] += 1
    out.put((acked, dict(errors)))


def soak(
    decisions: int = typer.Option(1_000_000, help="Decisions in total, each with 0-3 rewards."),
    clients: int = typer.Option(2, help="Load processes (closed loop, one channel each)."),
    workers: int = typer.Option(2, help="Serving processes of the server (placement serve --workers)."),
    seed: int = typer.Option(0, help="Seed of the load."),
    data_dir: Path = typer.Option(None, help="Server data directory (default: a temporary one)."),
    json_out: Path = typer.Option(None, help="Write the summary here as JSON."),
) -> None:
    """Run the soak and print the reconciliation."""
    data = data_dir or Path(tempfile.mkdtemp(prefix="placement-soak-"))
    config = data.parent / f"{data.name}-soak.toml"
    config.write_text(CONFIG)
    placement = str(Path(sys.executable).with_name("placement"))
    server = subprocess.Popen([placement, "serve", "--port", "0", "--data-dir", str(data), "--config", str(config),
                               "--log-level", "WARNING", "--workers", str(workers)], stderr=subprocess.PIPE, text=True)
    target = None
    for line in server.stderr:
        match = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
        if match:
            target = f"127.0.0.1:{match.group(1)}"
            break
    threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
    from server.client import PlacementClient, collection

    with PlacementClient(target) as admin:
        admin.put_collections([collection(c, {"collection": {"rank": float(i), "kind": f"k{i % 3}"}})
                               for i, c in enumerate(COLLECTIONS)])
    time.sleep(0.5)  # serving workers load catalog changes within 0.2 s
    rss: list[tuple[float, dict[str, float]]] = []
    started = time.monotonic()
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_client, args=(target, seed * 1000 + k, decisions // clients, out))
             for k in range(clients)]
    for p in procs:
        p.start()
    next_sample = 0.0
    while any(p.is_alive() for p in procs):
        if time.monotonic() - started >= next_sample:
            sample = _rss_by_process(server.pid)
            rss.append((time.monotonic() - started, sample))
            shown = ", ".join(f"{k} {v:.0f}" for k, v in sorted(sample.items()))
            typer.echo(f"  t={rss[-1][0]:7.0f}s  RSS MiB: {shown}", err=True)
            next_sample += 10
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    results = [out.get() for _ in procs]
    time.sleep(3.0)  # the last windows close
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=120)
    summary = _reconcile(data, results, rss, elapsed)
    typer.echo(json.dumps(summary, indent=1))
    if json_out:
        json_out.write_text(json.dumps(summary, indent=1))
    if not summary["reconciled"]:
        raise typer.Exit(1)


def _reconcile(data: Path, results, rss, elapsed: float) -> dict:
    from bandit.logformat.events import read_lines

    acked = Counter()
    errors = Counter()
    for a, e in results:
        acked.update(a)
        errors.update(e)
    events = Counter()
    for path in sorted((data / "events").rglob("*.jsonl")):
        for _, obj in read_lines(path, strict=False):
            events[obj["kind"]] += 1
    joined_ids = Counter(obj["EventId"] for path in sorted((data / "joined" / "default").glob("*.dsjson"))
                         for _, obj in read_lines(path, strict=False))
    models = data / "models" / "default"
    meta = json.loads((models / f"v{int((models / 'CURRENT').read_text()):06d}.json").read_text())
    joined = sum(joined_ids.values())
    expected_joined = acked["decisions"] - acked["deferred_unactivated"]
    per_process = {name: [(round(t), round(sample.get(name, 0), 1)) for t, sample in rss]
                   for name in (rss[-1][1] if rss else {})}
    checks = {
        "decisions_logged": events["decision"] == acked["decisions"],
        "rewards_logged": events["reward"] == acked["rewards"],
        "activations_logged": events["activate"] == acked["activations"],
        "each_joined_once": max(joined_ids.values(), default=1) == 1,
        "joined_all": joined == expected_joined,
        "learned_each_once": meta["examples_learned"] == joined and meta["joined_through"] == joined,
    }
    return {
        "decisions_per_second": round(acked["decisions"] / elapsed, 1),
        "acknowledged": dict(acked), "errors": dict(errors), "logged": dict(events),
        "joined": joined, "learned": meta["examples_learned"],
        "rss_mib": {name: {"first": samples[0][1], "after_1_min": next((v for t, v in samples if t >= 60), None),
                           "last": samples[-1][1], "max": max(v for _, v in samples), "samples": samples}
                    for name, samples in per_process.items()},
        "checks": checks, "reconciled": all(checks.values()),
    }


if __name__ == "__main__":
    typer.run(soak)
