"""Run `placement` as a real subprocess, as a user or a host would: wait for
its start-up line, and stop it with SIGTERM (killed if it hangs)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

PLACEMENT = str(Path(sys.executable).with_name("placement"))


def launch(args: list[str], pattern: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, re.Match]:
    """Start `placement ARGS` and return it once stderr shows ``pattern``."""
    proc = subprocess.Popen([PLACEMENT, *args], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    for line in proc.stderr:
        match = re.search(pattern, line)
        if match:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep the pipe drained
            return proc, match
    proc.wait()
    raise AssertionError(f"placement {args[0]} did not start (exit {proc.returncode})")


def stop(proc: subprocess.Popen, timeout: float = 60) -> int | str:
    """SIGTERM and wait; the exit code, or 'hung' (and killed) past the timeout."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "hung"


def serve(data: Path, config: Path, workers: int, health_timeout: float = 30) -> tuple[subprocess.Popen, str]:
    """`placement serve` on an OS-chosen port with this data directory, config
    and worker count; returned once it answers a health check."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    proc, match = launch(["serve", "--port", "0", "--data-dir", str(data), "--config", str(config),
                          "--workers", str(workers)], r"serving on 127\.0\.0\.1:(\d+)")
    target = f"127.0.0.1:{match.group(1)}"
    with grpc.insecure_channel(target) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=health_timeout)
    return proc, target


def config_toml(window_seconds: float, publish_every_examples: int, publish_every_seconds: float) -> str:
    """A configuration file's text for tests of real servers: the reward window
    and how often the learner publishes (joins checked every 0.05 s)."""
    return (f"[join]\nwindow_seconds = {window_seconds}\ntick_seconds = 0.05\n"
            f"[learner]\npublish_every_examples = {publish_every_examples}\n"
            f"publish_every_seconds = {publish_every_seconds}\n")


SLOTS = ["homepage", "email"]  # the two slots churn tests decide


def churn_context(n: int) -> dict:
    """The context of a churn test's n-th decision (a retry sends the same)."""
    return {"u": {"seg": "abc"[n % 3], "n": float(n % 7)}}


def kill_under_load(proc: subprocess.Popen, clients: Sequence[Callable[[threading.Event], None]],
                    seconds: float) -> None:
    """Run each client in a thread (it loops until the event is set or its
    server dies), SIGKILL ``proc`` after ``seconds``, give orphaned workers a
    second to notice their coordinator is gone, then stop the clients."""
    halt = threading.Event()
    load = [threading.Thread(target=client, args=(halt,)) for client in clients]
    for thread in load:
        thread.start()
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    halt.set()
    for thread in load:
        thread.join()
