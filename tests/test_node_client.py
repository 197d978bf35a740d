"""A client in a second language (Node.js, grpc-js), generated from the .proto
alone and calling with grpc-js's default options (no deadlines), drives the
default ``placement serve`` (one serving worker per core) through catalog,
Decide, Reward, Activate, DecideStream, admin and health, and checks every
answer (tests/node/client.js). node and its packages are part of the test
environment: ``scripts/test`` installs the packages (``npm ci``), ``.ci/run``
installs node itself; a machine without them fails here, it does not skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from placement_process import launch, stop

NODE_DIR = Path(__file__).parent / "node"
TOKEN = "node-client-admin-token"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: this test needs Node.js >= 18 and npm (.ci/run installs Debian's "
                    "nodejs and npm; or apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("tests/node/node_modules is missing: scripts/test installs it "
                    "(npm ci --prefix tests/node)")
    return node


def test_a_node_client_built_from_the_proto_alone_passes_every_check(tmp_path):
    node = _node()
    env = {"PLACEMENT_ADMIN_TOKEN": TOKEN}
    proc, match = launch(["serve", "--port", "0", "--data-dir", str(tmp_path / "data")],
                         r"serving on 127\.0\.0\.1:(\d+) \((\d+) workers?\)", env=env)
    try:
        result = subprocess.run([node, str(NODE_DIR / "client.js"), f"127.0.0.1:{match.group(1)}"],
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    finally:
        assert stop(proc) == 0
    assert result.returncode == 0, result.stderr + result.stdout
    assert "every check passed" in result.stdout
