"""What a caller's event id costs a multi-worker server: each Decide that
sets one is claimed at the coordinator before it is logged (idempotency across
workers, ``server.engine.Engine.claim``); one without is not.

    .venv/bin/python -m bench.claim [--workers 2] [--config 10x1] [--rounds 3] [--seconds 5]

Alternates rounds of Decide without an event id and with a unique one per call
(the same request otherwise; the id is appended to the serialized request, so
the load generator's cost is the same), closed loop, and prints per round and
the medians: decisions per second, p50/p99 latency, and server CPU seconds per
decision (every process, coordinator included). Compare the ratio within one
run; record the load average (printed) with it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from bench.grpc_load import DECIDE, Server, percentile
from bench.procs import CLK_TCK
from bench.workload import make_workload


def _with_event_id(payload: bytes, event_id: str) -> bytes:
    """DecideRequest field 1 (event_id) appended: the last occurrence of a
    scalar field is the one a parser keeps."""
    raw = event_id.encode()
    return payload + b"\x0a" + bytes([len(raw)]) + raw


async def _round(target: str, payload: bytes, label: str, seconds: float, concurrency: int) -> list[float]:
    import grpc

    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(4)]
    calls = [ch.unary_unary(DECIDE) for ch in channels]
    latencies: list[float] = []
    end = time.monotonic() + seconds
    counter = [0]

    async def worker(k: int) -> None:
        while time.monotonic() < end:
            counter[0] += 1
            n = counter[0]
            body = _with_event_id(payload, f"{label}-{n}") if label != "none" else payload
            start = time.monotonic()
            await calls[n % len(calls)](body, timeout=30)
            latencies.append((time.monotonic() - start) * 1e3)

    try:
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    finally:
        for ch in channels:
            await ch.close()
    return latencies


def cpu_seconds_alone(pid: int) -> float:
    """user+system CPU seconds of one process (the coordinator), its children left out."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="serving workers (default 2)")
    parser.add_argument("--config", default="10x1", help="candidates x slots (default 10x1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind, alternating (default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per round (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight (default 8)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    candidates, slots = (int(x) for x in args.config.split("x"))
    payload = make_workload(candidates, slots, args.seed).request_bytes()
    server = Server(args.workers)
    results: dict[str, list[tuple[float, float, float, float]]] = {"none": [], "own": []}
    print(f"load average at start: {os.getloadavg()}")
    try:
        server.check(payload, slots)
        for r in range(args.rounds):
            for kind in ("none", "own"):
                label = "none" if kind == "none" else f"own{r}"
                cpu0 = server.cpu_seconds()
                own0 = cpu_seconds_alone(server.proc.pid)
                lat = asyncio.run(_round(server.target, payload, label, args.seconds, args.concurrency))
                cpu = server.cpu_seconds() - cpu0
                coordinator = cpu_seconds_alone(server.proc.pid) - own0
                row = (len(lat) / args.seconds, percentile(lat, 50), percentile(lat, 99), cpu / len(lat) * 1e3,
                       coordinator / len(lat) * 1e3)
                results[kind].append(row)
                print(f"round {r} {kind:4}: {row[0]:7.0f}/s  p50 {row[1]:.2f} ms  p99 {row[2]:.2f} ms  "
                      f"server CPU {row[3]:.2f} ms/decision (coordinator {row[4]:.2f})", flush=True)
    finally:
        server.stop()
    print(f"load average at end: {os.getloadavg()}")
    med = {k: [statistics.median(col) for col in zip(*rows)] for k, rows in results.items()}
    print("\n| event id | decisions/s | p50 ms | p99 ms | server CPU ms/decision | of it the coordinator |\n"
          "|---|---|---|---|---|---|")
    for kind, name in (("none", "none (generated)"), ("own", "the caller's (claimed)")):
        t, p50, p99, cpu, coordinator = med[kind]
        print(f"| {name} | {t:.0f} | {p50:.2f} | {p99:.2f} | {cpu:.2f} | {coordinator:.2f} |")
    print(f"\nratio own/none: throughput {med['own'][0] / med['none'][0]:.3f}, "
          f"p50 {med['own'][1] / med['none'][1]:.3f}, CPU/decision {med['own'][3] / med['none'][3]:.3f}")


if __name__ == "__main__":
    main()
