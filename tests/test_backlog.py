"""When the learner cannot keep up (issue 15, point 4): its backlog is bounded,
reported, and subsampling what is learned (VW's ``pdrop``) is the way out.

The learner is slowed by real settings, not a mock: it publishes a model
version after every example (``publish_every_examples = 1``) of a 2^22-weight
workspace, so each learned example costs a model save and a serving reload."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from bandit.policy import Policy
from server.client import PlacementClient
from server.config import ConfigError, load_config
from server.learner import ITEM_OVERHEAD_BYTES, LearnBacklog, LearnItem, RateMeter

from helpers import LONG_WINDOW, SEGMENTS, SLOTS, assert_same_model, drive, plain_vw, register_collections, settle

SLOW_LEARNER = {
    "learner": {"publish_every_examples": 1, "publish_every_seconds": 0.5, "keep_versions": 2, "queue_size": 1},
    "surfaces": {"default": {"learning": {"bits": 22}}},
}


def _wait(condition, timeout: float = 60.0, what: str = "condition"):
    """Poll until ``condition()`` is truthy (returned); never a timed assertion,
    only a generous bound so a broken server fails instead of hanging."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _joined_lines(server) -> list[dict]:
    files = sorted((Path(server.engine.config.data_dir) / "joined" / "default").glob("*.dsjson"))
    return [json.loads(line) for f in files for line in open(f)]


def test_a_slow_learner_holds_joins_back_with_checkpoints_going_on_and_nothing_lost(start_topology):
    """Full backlog: decisions past their window stay pending (never dropped),
    the join loop keeps writing checkpoints, Decide is refused at
    limits.max_pending_decisions, and once the learner catches up every
    accepted decision is in the joined log and learned."""
    # The join ticks every 2 ms: at 20 ms it offered one decision a tick, no faster
    # than a learner publishing each example to a fast disk, and the backlog was never seen full.
    server = start_topology(join={"window_seconds": 0.5, "tick_seconds": 0.002, "checkpoint_seconds": 0.2},
                            limits={"max_pending_decisions": 120}, **SLOW_LEARNER)
    checkpoint = Path(server.engine.checkpoint_path)
    with PlacementClient(server.target) as client:
        register_collections(client)
        accepted, refused = 0, None
        for i in range(5000):  # the learner takes tens of ms an example: the pending limit comes first
            try:
                client.decide({"customer": {"segment": SEGMENTS[i % 3]}}, SLOTS, event_id=f"slow-{i}")
                accepted += 1
            except grpc.RpcError as exc:
                refused = exc
                break
        assert refused is not None and refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limits.max_pending_decisions" in refused.details()
        last_decided = time.time()
        _wait(lambda: time.time() > last_decided + 0.5, what="the last window to pass")
        # Every pending decision is past its window now; the join waits for the learner.
        behind = _wait(lambda: (s := client.stats()).pending > 0 and s.learn_backlog_items == 1 and s,
                       what="a full backlog")
        assert behind.learn_backlog_bytes > 0
        # A reward past the window is refused as expired even while its decision waits to join
        # (what joins never depends on how far behind the learner is).
        with pytest.raises(grpc.RpcError) as late:
            client.reward(f"slow-{accepted - 1}", 1.0, slot_id="homepage")
        assert late.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "past its reward window" in late.value.details()
        # The join loop goes on: a checkpoint is written while decisions still wait.
        before = checkpoint.stat().st_mtime_ns
        _wait(lambda: checkpoint.stat().st_mtime_ns != before, what="a checkpoint")
        assert client.stats().pending > 0, "the backlog drained before a checkpoint: slow the learner more"
        for _ in range(20):  # the bound holds all along (queue_size = 1)
            assert client.stats().learn_backlog_items <= 1
        settle(server)
        stats = client.stats()
    assert stats.pending == 0 and stats.joined == accepted
    assert stats.surfaces[0].examples_learned == accepted
    lines = _joined_lines(server)
    assert sorted(line["EventId"] for line in lines) == sorted(f"slow-{i}" for i in range(accepted))
    [last] = [line for line in lines if line["EventId"] == f"slow-{accepted - 1}"]
    assert all(outcome["_default"] for outcome in last["_outcomes"])  # the late reward is not in it


def test_subsampling_is_counted_and_the_backlog_reported_in_get_stats_and_metrics(start_topology):
    server = start_topology(join=LONG_WINDOW, metrics={"port": 0},
                            learner={"sample_rate": 0.5, "max_backlog_bytes": 8_000_000,
                                     "publish_every_examples": 100, "publish_every_seconds": 0.5})
    with PlacementClient(server.target) as client:
        register_collections(client)
        drive(client, 200, seed=3)
        settle(server)
        stats = client.stats()
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    scraped = {m.group(1): float(m.group(2)) for m in re.finditer(r"^placement_(\w+) (\S+)$", body, re.M)}
    assert stats.decisions == 200  # left-out decisions still count as decisions...
    assert stats.joined + stats.learn_subsampled == 200  # ... and as left out
    assert 50 < stats.learn_subsampled < 150  # Binomial(200, 0.5): ~7 standard deviations either side
    assert stats.surfaces[0].examples_learned == stats.joined
    assert stats.learn_backlog_items == 0 and stats.learn_backlog_bytes == 0
    assert stats.learn_backlog_limit_bytes == 8_000_000
    assert stats.learner_events_per_second > 0
    assert scraped["learn_subsampled_total"] == stats.learn_subsampled
    assert scraped["learn_backlog_items"] == 0 and scraped["learn_backlog_bytes"] == 0
    assert scraped["learn_backlog_limit_bytes"] == 8_000_000
    assert scraped["learner_events_per_second"] > 0
    lines = _joined_lines(server)
    assert len(lines) == stats.joined
    assert all(line["pdrop"] == 0.5 for line in lines)


def test_plain_vw_on_a_subsampled_joined_log_gives_the_servers_model(start_topology, tmp_path):
    """The kept lines carry pdrop; `python -m vowpalwabbit --dsjson` on them
    learns the model the server published (both weight by 1 / (1 - pdrop))."""
    server = start_topology(join=LONG_WINDOW, learner={"sample_rate": 0.4, "publish_every_examples": 10_000,
                                                       "publish_every_seconds": 3600})
    with PlacementClient(server.target) as client:
        register_collections(client)
        drive(client, 250, seed=8)
        settle(server)
    files = sorted((Path(server.engine.config.data_dir) / "joined" / "default").glob("*.dsjson"))
    assert all(json.loads(line)["pdrop"] == pytest.approx(0.6) for f in files for line in open(f))
    settings = server.engine.surfaces["default"].settings
    plain_vw(settings, files, tmp_path / "plain.vw")
    store = server.engine.surfaces["default"].store
    assert_same_model(Policy(settings, model_path=store.path(store.current().version)),
                      Policy(settings, model_path=tmp_path / "plain.vw"))



@pytest.mark.parametrize("text, message", [
    ("[learner]\nsample_rate = 0\n", r"learner.sample_rate 0 is not in \(0, 1\]"),
    ("[learner]\nsample_rate = 1.5\n", r"learner.sample_rate 1.5 is not in \(0, 1\]"),
    ("[learner]\nmax_backlog_bytes = 0\n", "learner.max_backlog_bytes and learner.queue_size must be positive"),
    ("[join]\ncheckpoint_seconds = 0\n", "join.checkpoint_seconds must be positive"),
])
def test_bad_backlog_settings_are_refused_naming_the_setting(tmp_path, text, message):
    path = tmp_path / "placement.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_the_backlog_bounds_bytes_and_items_and_counts_what_it_holds():
    backlog = LearnBacklog(max_bytes=10 * (1000 + ITEM_OVERHEAD_BYTES), max_items=100)
    assert backlog.room() == 1  # nothing seen yet: one at a time
    backlog.put_many([LearnItem("default", "online", 0.0, "x" * 1000) for _ in range(4)])
    assert backlog.depth() == (4, 4 * (1000 + ITEM_OVERHEAD_BYTES))
    assert 1 <= backlog.room() <= 6  # by the mean size of what it has seen
    backlog.put_many([LearnItem("default", "online", 0.0, "x" * 1000) for _ in range(6)])
    assert backlog.room() == 0  # full in bytes
    item = backlog.get(timeout=0)
    assert item is not None and backlog.depth()[0] == 9 and backlog.unfinished == 10
    backlog.done()
    assert backlog.room() >= 1 and backlog.unfinished == 9
    few = LearnBacklog(max_bytes=1 << 30, max_items=2)
    few.put_many([LearnItem("default", "online", 0.0, "x") for _ in range(2)])
    assert few.room() == 0  # full in items
    few.close()
    assert few.get(timeout=0) is not None and few.get(timeout=0) is not None and few.get(timeout=5) is None


def test_the_learner_rate_is_events_over_the_last_seconds():
    now = [100.0]
    meter = RateMeter(window=10.0, clock=lambda: now[0])
    now[0] = 110.0
    meter.add(50)
    assert meter.rate() == pytest.approx(5.0)
    now[0] = 130.0  # nothing learned for 20 s
    assert meter.rate() == 0.0
