"""Where Decide spends its time.

  .venv/bin/python -m bench.profile engine [--config 50x3] [--seconds 10]
      pyinstrument around a loop of Engine.decide (measurement C); prints the
      call tree (frames >= 2 % of the time).
  .venv/bin/python -m bench.profile server [--config 50x3] [--seconds 10] [--gil]
      placement serve under closed-loop gRPC load (measurement D), sampled by
      py-spy from outside (all threads; --gil: only the thread holding the GIL);
      prints the top functions by inclusive and by self samples. --workers N
      profiles 'placement serve --workers N' (all processes together); --pin
      adds --pin-cpus.

Needs ``pip install pyinstrument py-spy`` (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_LINE = re.compile(r"\s*\(([^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    """``decide (/x/server/engine.py:170)`` -> ``decide (server/engine.py)``."""
    m = _LINE.search(frame)
    if not m:
        return frame
    path = m.group(1)
    for marker in ("/site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{frame[:m.start()].strip()} ({path})"


def summarise_raw(raw: str, top: int = 25) -> str:
    """Inclusive and self sample shares per function from py-spy's raw
    (collapsed stacks) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    out = [f"{total} samples", "", "inclusive (function, share of samples):"]
    out += [f"  {100 * n / total:5.1f} %  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"  {100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def profile_engine(cands: int, slots: int, seconds: float, seed: int) -> None:
    from pyinstrument import Profiler

    from bench.inproc import EngineInProc
    from bench.workload import make_workload

    eng = EngineInProc(make_workload(cands, slots, seed))
    try:
        eng.run(0.5)
        profiler = Profiler(interval=0.0005)
        profiler.start()
        rate = eng.run(seconds)
        profiler.stop()
    finally:
        eng.close()
    print(f"Engine.decide {cands}x{slots}: {rate:.0f}/s under the profiler")
    print(profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False,
                               time="percent_of_total", flat=False, processor_options={"filter_threshold": 0.02}
                               ) if _has_kw() else profiler.output_text(unicode=False, color=False))


def _has_kw() -> bool:
    import inspect

    from pyinstrument import Profiler

    return "processor_options" in inspect.signature(Profiler.output_text).parameters


def profile_server(cands: int, slots: int, seconds: float, seed: int, clients: int, concurrency: int,
                   gil: bool, workers: int, pinned: bool = False) -> None:
    from bench.grpc_load import LoadGenerator, Phase, Server, serve_supports_workers
    from bench.workload import make_workload

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    w = make_workload(cands, slots, seed)
    payload = w.request_bytes()
    server = Server(workers if serve_supports_workers() else None, extra_args=("--pin-cpus",) if pinned else ())
    gen = None
    out = Path(tempfile.mkdtemp(prefix="bench-pyspy-")) / "server.raw"
    try:
        server.check(payload, slots)
        gen = LoadGenerator(server.target, payload, clients)
        warmup = 1.0
        start = time.monotonic() + 2.0 + warmup
        phases = [Phase("closed", start, seconds + 1.0, warmup, concurrency=concurrency) for _ in range(clients)]
        for q, ph in zip(gen.queues, phases):
            q.put(ph)
        time.sleep(max(0.0, start - time.monotonic()))
        cmd = [pyspy, "record", "--pid", str(server.proc.pid), "--duration", str(int(seconds)), "--rate", "250",
               "--format", "raw", "--output", str(out), "--nonblocking", "--subprocesses"]
        if gil:
            cmd.append("--gil")
        subprocess.run(cmd, check=True, capture_output=True)
        done = 0
        for _ in phases:
            _, res = gen.results.get(timeout=seconds + 120)
            done += res.completed
        print(f"placement serve {cands}x{slots}: {done / (seconds + 1.0):.0f}/s under py-spy "
              f"({clients} clients x {concurrency} in flight){' [--gil]' if gil else ''}"
              f"{' [--pin-cpus]' if pinned else ''}")
        print(summarise_raw(out.read_text()))
    finally:
        if gen is not None:
            gen.close()
        server.stop()
        shutil.rmtree(out.parent, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", choices=("engine", "server"))
    ap.add_argument("--config", default="50x3", help="candidates x slots [50x3]")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--gil", action="store_true", help="server: sample only the GIL holder")
    ap.add_argument("--pin", action="store_true", help="server: 'placement serve --pin-cpus'")
    ap.add_argument("--workers", type=int, default=1,
                    help="server: 'placement serve --workers N' when the flag exists; py-spy follows "
                         "subprocesses [1]")
    args = ap.parse_args(argv)
    cands, slots = (int(x) for x in args.config.lower().split("x"))
    if args.target == "engine":
        profile_engine(cands, slots, args.seconds, args.seed)
    else:
        profile_server(cands, slots, args.seconds, args.seed, args.clients, args.concurrency, args.gil, args.workers,
                       args.pin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
