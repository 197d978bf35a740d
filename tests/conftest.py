"""Shared fixtures: a real server on an OS-chosen loopback port, a real channel.

``server`` and ``client`` run each test against every topology a user can
run: one process (``placement serve --workers 1``) and the default, serving
workers behind a coordinator (``placement serve``). A test that is inherently
about one process is marked ``@pytest.mark.single_process("why")``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import pytest

from server.app import start_server
from server.client import PlacementClient
from server.config import ServerConfig, load_config
from server.engine import Engine
from server.workers import Coordinator

# A short window (joins close within a test), yet one a reward sent at once
# stays inside when a slow machine delays a call: 0.5 s failed a different
# test or two in each of three clean-clone CI runs beside other load.
FAST = {
    "join": {"window_seconds": 2.0, "tick_seconds": 0.02},
    "learner": {"publish_every_examples": 100, "publish_every_seconds": 0.5},
}
TOPOLOGIES = ("single", "workers")


def make_config(data_dir: Path, **overrides: Any):
    settings = {"host": "127.0.0.1", "port": 0, "data_dir": data_dir, **FAST, **overrides}
    return load_config(None, **settings)


class Served(Protocol):
    """What a test needs of a running server, whatever its topology: where to
    call it, the engine that joins and learns (tests settle joins through it),
    and a stop."""

    engine: Engine

    @property
    def target(self) -> str: ...

    def stop(self, grace: float = 5.0) -> None: ...


@dataclass
class WorkerServer:
    """The default topology in this process: a coordinator and two spawned
    serving workers sharing one port."""

    coordinator: Coordinator
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def engine(self) -> Engine:
        return self.coordinator.engine

    @property
    def metrics_port(self) -> int | None:
        return self.coordinator.metrics_port

    def stop(self, grace: float = 5.0) -> None:
        self.coordinator.stop()


def serve(config: ServerConfig, topology: str = "single") -> Served:
    if topology == "single":
        return start_server(config)
    coordinator = Coordinator(config, workers=2)
    try:
        return WorkerServer(coordinator, coordinator.start())
    except BaseException:
        coordinator.stop()
        raise


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "single_process(reason): runs on the single-process topology only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "topology" in metafunc.fixturenames:
        only_single = metafunc.definition.get_closest_marker("single_process") is not None
        # Module scope: tests of one topology run together and can share a server (shared_server).
        metafunc.parametrize("topology", ["single"] if only_single else list(TOPOLOGIES), scope="module")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """CLI commands install log handlers on streams that die with the command."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start servers on demand (same data dir unless told otherwise, one
    process unless told ``topology=``); all stop at the end."""
    running: list[Served] = []

    def _start(data_dir: Path | None = None, topology: str = "single", **overrides: Any) -> Served:
        server = serve(make_config(data_dir or tmp_path / "data", **overrides), topology)
        running.append(server)
        return server

    yield _start
    for server in running:
        try:
            server.stop(grace=0.5)
        except Exception:
            pass


@pytest.fixture
def start_topology(start, topology: str) -> Callable[..., Served]:
    """``start`` on the test's topology (every topology, see the module doc)."""
    return lambda data_dir=None, **overrides: start(data_dir, topology=topology, **overrides)


@pytest.fixture
def server(start_topology) -> Served:
    return start_topology()


@pytest.fixture
def client(server: Served) -> Iterator[PlacementClient]:
    with PlacementClient(server.target) as c:
        yield c


@pytest.fixture(scope="module")
def shared_server(topology: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server per module and topology, for tests that need no fresh data
    directory (a coordinator with its workers takes a second or two to start);
    such tests use their own event ids and assert nothing about totals."""
    running = serve(make_config(tmp_path_factory.mktemp("shared") / "data"), topology)
    yield running
    running.stop(grace=0.5)


@pytest.fixture
def shared_client(shared_server: Served) -> Iterator[PlacementClient]:
    with PlacementClient(shared_server.target) as c:
        yield c
