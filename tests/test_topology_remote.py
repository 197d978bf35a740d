"""Remote workers under churn (issue 11): a coordinator SIGKILLed and
restarted while clients decide and reward through its workers, and a worker
SIGKILLed and replaced by a new one, lose nothing: every acknowledged decision
is joined exactly once with every acknowledged reward, and no reward for an
acknowledged decision is refused as unknown. Real processes throughout (the
coordinator and each worker is its own `placement` command, as on separate
hosts sharing the data directory)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from server.client import PlacementClient, collection

from helpers import joined_items, logged_decisions
from placement_process import SLOTS, churn_context, config_toml, launch, stop

CONFIG = config_toml(8.0, 200, 0.5)
RETRY_SECONDS = 30  # how long a reward refused as UNAVAILABLE (coordinator away) is retried



@dataclass
class Book:
    """What the clients were told: acknowledged decisions (event id -> the
    slots' collections) and rewards, rewards to retry, and every refusal."""

    decisions: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    contexts: dict[str, int] = field(default_factory=dict)  # event id -> n of churn_context(n)
    rewards: set[tuple[str, str]] = field(default_factory=set)
    unsent: list[tuple[str, str]] = field(default_factory=list)
    refused: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reward(self, client: PlacementClient, event_id: str, slot: str) -> bool:
        """One reward; False when it should be retried (the coordinator is away)."""
        try:
            client.reward(event_id, 1.0, slot_id=slot)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                return False
            with self.lock:
                self.failures.append((event_id, err.code().name, err.details()))
            return True
        with self.lock:
            self.rewards.add((event_id, slot))
        return True

    def send(self, client: PlacementClient, event_id: str, slot: str) -> None:
        """A reward, after those refused before it as the client retries them
        (the oldest first, while they are taken): kept for later if refused."""
        with self.lock:
            self.unsent.append((event_id, slot))
        while True:
            with self.lock:
                if not self.unsent:
                    return
                item = self.unsent.pop(0)
            if not self.reward(client, *item):
                with self.lock:
                    self.unsent.insert(0, item)
                return


class Cluster:
    """A coordinator (`serve --workers 0 --coordinator-listen`) and named remote
    workers on one data directory, each on its own OS-chosen port."""

    def __init__(self, tmp: Path, top: str = "", sections: str = ""):
        """``top``, ``sections``: configuration before and after the common one."""
        self.data, self.config = tmp / "shared", tmp / "c.toml"
        self.config.write_text(top + CONFIG + sections)
        self.common = ["--data-dir", str(self.data), "--config", str(self.config)]
        self.coordinator: subprocess.Popen | None = None
        self.internal = "127.0.0.1:0"
        self.workers: dict[str, tuple[subprocess.Popen, str]] = {}

    def start_coordinator(self) -> None:
        """Started again on the address it first got (workers know it)."""
        self.coordinator, match = launch(["serve", "--workers", "0", "--coordinator-listen", self.internal,
                                          *self.common], r"coordinator for remote workers on port (\d+)")
        self.internal = f"127.0.0.1:{match.group(1)}"

    def start_worker(self, name: str) -> str:
        proc, match = launch(["worker", "--coordinator", self.internal, "--name", name, "--port", "0",
                              *self.common], rf"worker {name} serving on 127\.0\.0\.1:(\d+)")
        self.workers[name] = proc, f"127.0.0.1:{match.group(1)}"
        return self.workers[name][1]

    def kill(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> list:
        """Workers first, then the coordinator; their exit codes."""
        codes = [stop(proc) for proc, _ in self.workers.values() if proc.poll() is None]
        if self.coordinator is not None and self.coordinator.poll() is None:
            codes.append(stop(self.coordinator))
        return codes


def _traffic(targets: list[str], seed: int, halt: threading.Event, book: Book) -> None:
    """Decide through one worker, every other decision with the client's own
    event id and the others with none (the worker's, served while the
    coordinator is away), and reward two in three through the next worker,
    until halted; refusals are counted and the load goes on (a worker or the
    coordinator may be down)."""
    n = 0
    while not halt.is_set():
        live = list(targets)
        decider, rewarder = live[n % len(live)], live[(n + 1) % len(live)]
        try:
            with PlacementClient(decider, timeout=5) as client:
                result = client.decide(churn_context(n), SLOTS, event_id="" if n % 2 else f"r{seed}-{n}")
        except grpc.RpcError as err:
            with book.lock:
                book.refused[err.code().name] += 1
            time.sleep(0.01)
            n += 1
            continue
        with book.lock:
            book.decisions[result.event_id] = [(s.slot_id, s.collection_id) for s in result.slots]
            book.contexts[result.event_id] = n
        if n % 3:
            with PlacementClient(rewarder, timeout=5) as client:
                book.send(client, result.event_id, "homepage")
        n += 1


def _run_load(targets: list[str], churn, seconds_after: float, book: Book | None = None) -> Book:
    """Load from three clients; ``churn()`` runs in the middle of it."""
    book, halt = book or Book(), threading.Event()
    load = [threading.Thread(target=_traffic, args=(targets, s, halt, book)) for s in range(3)]
    for thread in load:
        thread.start()
    try:
        time.sleep(2.0)
        churn()
        time.sleep(seconds_after)
    finally:
        halt.set()
        for thread in load:
            thread.join()
    return book


def _send_unsent(book: Book, target: str) -> None:
    """Rewards still refused while the coordinator was away, retried until it takes them."""
    deadline = time.monotonic() + RETRY_SECONDS
    with PlacementClient(target, timeout=5) as client:
        while book.unsent:
            assert time.monotonic() < deadline, f"{len(book.unsent)} rewards still UNAVAILABLE"
            book.send(client, *book.unsent.pop(0))
            time.sleep(0.05)


def _wait_joined(target: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with PlacementClient(target, timeout=10) as client:
        while (stats := client.stats()).pending:
            assert time.monotonic() < deadline, stats
            time.sleep(0.2)


def _assert_joined_once(data: Path, book: Book) -> None:
    """Every acknowledged decision joined exactly once, as the client saw it,
    with every acknowledged reward; none logged twice."""
    assert book.failures == [], f"{len(book.failures)} rewards refused, e.g. {book.failures[:3]}"
    logged = Counter(e["id"] for e in logged_decisions(data))
    assert [eid for eid, n in logged.items() if n > 1] == [], "a decision was logged twice"
    joined = {}
    for item in joined_items(data):
        assert item.decision.event_id not in joined, f"{item.decision.event_id} joined twice"
        joined[item.decision.event_id] = item
    missing = set(book.decisions) - set(joined)
    assert not missing, f"{len(missing)} of {len(book.decisions)} acknowledged decisions never joined"
    for eid, slots in book.decisions.items():
        decision = joined[eid].decision
        learned = [(c.slot_id, decision.inp.candidates[c.action].id) for c in decision.choices]
        assert learned == slots, f"{eid}: the client was given {slots}, {learned} is learned"
    for eid, slot in book.rewards:
        item = joined[eid]
        assert item.observed[[c.slot_id for c in item.decision.choices].index(slot)], (eid, slot)


def _catalog(target: str) -> None:
    with PlacementClient(target) as admin:
        admin.put_collections([collection(f"c{i}", {"c": {"x": float(i)}}) for i in range(4)])
    time.sleep(0.5)  # idle workers load the catalog within REFRESH_SECONDS


def test_coordinator_sigkilled_under_load_loses_nothing(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.start_coordinator()
        targets = [cluster.start_worker("host-a"), cluster.start_worker("host-b")]
        _catalog(targets[0])

        while_away = []  # decisions acknowledged while the coordinator was dead or recovering

        def restart_coordinator() -> None:
            for _ in range(2):
                before = len(book.decisions)
                cluster.kill(cluster.coordinator)
                time.sleep(1.0)  # workers decide on without it
                cluster.start_coordinator()  # returns once it has recovered and listens
                while_away.append(len(book.decisions) - before)
                time.sleep(1.0)

        book = Book()
        _run_load(targets, restart_coordinator, seconds_after=2.0, book=book)
        assert len(book.decisions) > 200 and min(while_away) > 20, (while_away, book.refused)
        # While it was away, a Decide with an event id was refused (the
        # coordinator owns event ids), retryable, and nothing else was.
        assert set(book.refused) <= {"UNAVAILABLE"}, book.refused
        _send_unsent(book, targets[1])
        _wait_joined(targets[0])
    finally:
        codes = cluster.stop()
    assert codes == [0, 0, 0]
    _assert_joined_once(cluster.data, book)


def test_remote_worker_sigkilled_and_replaced_under_load_loses_nothing(tmp_path):
    """A worker killed after it acknowledged decisions, and a new worker joining:
    rewards for the dead worker's decisions reach the coordinator through the
    others, and a Decide retried on another worker gets the answer the dead
    one gave (the one that is learned)."""
    cluster = Cluster(tmp_path)
    try:
        cluster.start_coordinator()
        targets = [cluster.start_worker("host-a"), cluster.start_worker("host-b")]
        _catalog(targets[0])
        before: dict = {}

        def replace_worker() -> None:
            cluster.kill(cluster.workers["host-b"][0])
            targets.remove(cluster.workers["host-b"][1])
            targets.append(cluster.start_worker("host-c"))

        book = _run_load(targets, replace_worker, seconds_after=2.0)
        before.update(book.decisions)
        assert len(book.decisions) > 200, book.refused
        assert set(book.refused) <= {"UNAVAILABLE"}, book.refused  # calls that reached the dead worker
        with PlacementClient(targets[-1], timeout=5) as client:  # retries on the new worker
            for eid in sorted(before)[::7]:
                result = client.decide(churn_context(book.contexts[eid]), SLOTS, event_id=eid)
                assert [(s.slot_id, s.collection_id) for s in result.slots] == before[eid], eid
        _wait_joined(targets[0])
    finally:
        codes = cluster.stop()
    assert codes == [0, 0, 0]  # host-b was killed: host-a, host-c and the coordinator stop cleanly
    _assert_joined_once(cluster.data, book)


def test_forwarded_calls_follow_the_callers_deadline_else_a_bound(tmp_path):
    """Rewards and activations a worker passes to a coordinator that does not
    answer (SIGSTOP): with a client deadline the forwarded call ends with it,
    so callers that gave up hold no worker thread (a Decide is served); without
    one it ends after limits.forward_timeout_seconds with a message naming it,
    as the forwarded admin calls do."""
    cluster = Cluster(tmp_path, top="threads = 1\n", sections="[limits]\nmax_streams = 1\nforward_timeout_seconds = 1.5\n")
    try:
        cluster.start_coordinator()
        target = cluster.start_worker("host-a")
        _catalog(target)
        with PlacementClient(target, timeout=5) as client:
            client.decide(churn_context(0), SLOTS, event_id="fwd-0", deferred=True)
        cluster.coordinator.send_signal(signal.SIGSTOP)
        try:
            with PlacementClient(target, timeout=None) as patient:  # no deadline: grpc's default
                for call in (lambda: patient.reward("fwd-0", 1.0, slot_id="email"),
                             lambda: patient.activate("fwd-0"), patient.stats):
                    with pytest.raises(grpc.RpcError) as err:
                        call()
                    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    assert "limits.forward_timeout_seconds (1.5 s" in err.value.details()
            # Four callers that give up after 0.3 s, more than the worker's two handler threads.
            with futures.ThreadPoolExecutor(4) as pool:
                hurried = [pool.submit(_give_up_early, target, n) for n in range(4)]
                assert [f.result() for f in hurried] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 4
            with PlacementClient(target, timeout=1.0) as client:  # held threads would keep it queued 1.5 s
                assert client.decide(churn_context(1), SLOTS).slots
        finally:
            cluster.coordinator.send_signal(signal.SIGCONT)
        with PlacementClient(target, timeout=10) as client:  # and it answers again
            client.decide(churn_context(2), SLOTS, event_id="fwd-1", deferred=True)
            client.activate("fwd-1")
            assert client.reward("fwd-1", 1.0, slot_id="email") == "email"
    finally:
        codes = cluster.stop()
    assert codes == [0, 0]


def _give_up_early(target: str, n: int) -> grpc.StatusCode:
    """A Reward or an Activate (by n) with a 0.3 s deadline; its status."""
    with PlacementClient(target, timeout=0.3) as client:
        try:
            if n % 2:
                client.reward("fwd-0", 1.0, slot_id="email")
            else:
                client.activate("fwd-0")
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK
