"""Multi-process serving: workers share the port, each logs its own decisions,
the coordinator joins them all exactly once and learns; workers pick up new
model versions without failing calls."""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import grpc

from bandit.logformat.events import read_lines
from server.client import PlacementClient, collection

from placement_process import launch, stop

CONFIG = """
[join]
window_seconds = 1.0
tick_seconds = 0.05
[learner]
publish_every_examples = 100
publish_every_seconds = 0.3
"""


def test_workers_share_the_port_and_join_exactly_once(tmp_path):
    data, config = tmp_path / "data", tmp_path / "c.toml"
    config.write_text(CONFIG)
    proc, match = launch(["serve", "--port", "0", "--data-dir", str(data), "--config", str(config),
                          "--workers", "2"], r"serving on 127\.0\.0\.1:(\d+) \(2 workers\)")
    target = f"127.0.0.1:{match.group(1)}"
    try:
        with PlacementClient(target) as admin:
            admin.put_collections([collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(5)])
        rng = random.Random(0)
        decided, rewarded, versions, failures = set(), set(), Counter(), []
        for batch in range(30):  # a fresh connection per batch: the kernel spreads them over workers
            with PlacementClient(target) as client:
                for i in range(40):
                    try:
                        result = client.decide({"u": {"seg": rng.choice("abc")}}, ["homepage", "email"])
                        decided.add(result.event_id)
                        versions[result.model_version] += 1
                        slot = rng.choice(["homepage", "email"])
                        client.reward(result.event_id, 1.0, slot_id=slot)  # may reach the other worker
                        rewarded.add((result.event_id, slot))
                    except grpc.RpcError as err:
                        failures.append((err.code(), err.details()))
        assert not failures, failures[:3]
        assert len(versions) >= 3, versions  # workers picked up new versions while serving
        time.sleep(2.0)
        with PlacementClient(target) as admin:
            stats = admin.stats()
            assert stats.decisions == len(decided) and stats.rewards == len(rewarded)
            assert stats.pending == 0 and stats.joined == len(decided)
            assert stats.rewards_rejected_unknown == 0
    finally:
        assert stop(proc) == 0
    per_worker = {path.parent.name: sum(1 for _ in read_lines(path))
                  for path in (data / "events").glob("worker-*/*.jsonl")}
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
    assert sum(per_worker.values()) == len(decided)
    joined = Counter(obj["EventId"] for path in (data / "joined" / "default").glob("*.dsjson")
                     for _, obj in read_lines(path))
    assert set(joined) == decided and max(joined.values()) == 1
    models = data / "models" / "default"
    meta = json.loads((models / f"v{int((models / 'CURRENT').read_text()):06d}.json").read_text())
    assert meta["examples_learned"] == len(decided)
