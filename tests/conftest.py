"""Shared fixtures: a real server on an OS-chosen loopback port, a real channel."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from server.app import RunningServer, start_server
from server.client import PlacementClient
from server.config import load_config

FAST = {
    "join": {"window_seconds": 0.5, "tick_seconds": 0.02},
    "learner": {"publish_every_examples": 100, "publish_every_seconds": 0.5},
}


def make_config(data_dir: Path, **overrides: Any):
    settings = {"host": "127.0.0.1", "port": 0, "data_dir": data_dir, **FAST, **overrides}
    return load_config(None, **settings)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """CLI commands install log handlers on streams that die with the command."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start servers on demand (same data dir unless told otherwise); all stop at the end."""
    running: list[RunningServer] = []

    def _start(data_dir: Path | None = None, **overrides: Any) -> RunningServer:
        server = start_server(make_config(data_dir or tmp_path / "data", **overrides))
        running.append(server)
        return server

    yield _start
    for server in running:
        try:
            server.stop(grace=0.5)
        except Exception:
            pass


@pytest.fixture
def server(start) -> RunningServer:
    return start()


@pytest.fixture
def client(server: RunningServer) -> Iterator[PlacementClient]:
    with PlacementClient(server.target) as c:
        yield c
