"""Run `placement` as a real subprocess, as a user or a host would: wait for
its start-up line, and stop it with SIGTERM (killed if it hangs)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

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
