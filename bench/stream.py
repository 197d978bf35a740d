"""DecideStream for bulk work: ``.venv/bin/python -m bench.stream``.

A campaign of ``--decisions`` (default 100k) decisions through one
DecideStream against ``placement serve`` in a child process, against the same
request sent as unary Decide calls on one channel, one at a time and with
``--concurrency`` calls in flight. Every request carries its own event id, so
the stream's answers are checked to come back complete and in request order.
Phases are interleaved (unary, stream, unary in flight, repeated ``--rounds``
times) and each reports decisions per second; compare the ratios of one run
(the machine is shared). See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from bench.grpc_load import Server
from bench.report import log, publish
from bench.workload import make_workload

DECIDE = "/placement.v1.PlacementService/Decide"
DECIDE_STREAM = "/placement.v1.PlacementService/DecideStream"
# Pending decisions are kept until their window closes: a short one keeps the
# server's memory flat over 100k decisions, and joins and learns during the run.
SERVER_CONFIG = "[join]\nwindow_seconds = 5\n"


def requests(base: bytes, prefix: str, n: int) -> Iterator[bytes]:
    """``base`` with event id ``prefix-i``: a serialized message followed by
    another's fields is the merged message, so no request is re-encoded."""
    from placement.v1 import placement_pb2 as pb

    for i in range(n):
        yield base + pb.DecideRequest(event_id=f"{prefix}-{i}").SerializeToString()


def run_stream(channel, base: bytes, prefix: str, n: int) -> dict:
    from placement.v1 import placement_pb2 as pb

    call = channel.stream_stream(DECIDE_STREAM, request_serializer=lambda b: b,
                                 response_deserializer=pb.DecideResponse.FromString)
    started, errors, out_of_order, answered = time.perf_counter(), 0, 0, 0
    for i, answer in enumerate(call(requests(base, prefix, n))):
        answered += 1
        errors += answer.HasField("error") or not answer.slots
        out_of_order += answer.event_id != f"{prefix}-{i}"
        if i and i % 20_000 == 0:
            log(f"  stream: {i:,} answered")
    seconds = time.perf_counter() - started
    return {"n": n, "answered": answered, "errors": errors, "out_of_order": out_of_order, "seconds": seconds,
            "per_second": answered / seconds}


def run_unary(channel, base: bytes, prefix: str, n: int, in_flight: int) -> dict:
    from placement.v1 import placement_pb2 as pb

    call = channel.unary_unary(DECIDE, request_serializer=lambda b: b,
                               response_deserializer=pb.DecideResponse.FromString)
    errors = 0

    def one(payload: bytes) -> int:
        try:
            return int(not call(payload, timeout=30).slots)
        except Exception:
            return 1

    started = time.perf_counter()
    if in_flight == 1:
        errors = sum(one(p) for p in requests(base, prefix, n))
    else:
        with ThreadPoolExecutor(in_flight) as pool:
            errors = sum(pool.map(one, requests(base, prefix, n), chunksize=64))
    seconds = time.perf_counter() - started
    return {"n": n, "errors": errors, "seconds": seconds, "per_second": n / seconds}


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=100_000, help="decisions through the stream per round")
    parser.add_argument("--unary", type=int, default=10_000, help="unary Decide calls per unary phase and round")
    parser.add_argument("--concurrency", type=int, default=8, help="unary calls in flight in the second unary phase")
    parser.add_argument("--config", default="10x3", help="candidates x slots of every request (default 10x3)")
    parser.add_argument("--workers", type=int, default=1, help="placement serve --workers (1: one process; "
                        "one stream and one channel reach one worker either way)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the three phases")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json-out", type=Path, default=Path("bench/results/stream.json"))
    args = parser.parse_args(argv)
    import grpc

    candidates, slots = (int(x) for x in args.config.lower().split("x"))
    base = make_workload(candidates, slots, args.seed).request_bytes()
    config = Path(tempfile.mkdtemp(prefix="bench-stream-")) / "serve.toml"
    config.write_text(SERVER_CONFIG)
    info = {"command": " ".join(["python -m bench.stream", *(argv if argv is not None else sys.argv[1:])]),
            "commit": commit(), "loadavg_start": os.getloadavg(), "nproc": os.cpu_count(), "config": args.config,
            "workers": args.workers, "rounds": []}
    server = Server(args.workers, extra_args=("--config", str(config)))
    try:
        with grpc.insecure_channel(server.target) as channel:
            for r in range(args.rounds):
                log(f"round {r + 1}: {args.unary:,} unary calls, one at a time")
                unary = run_unary(channel, base, f"u{r}", args.unary, 1)
                log(f"round {r + 1}: {args.decisions:,} decisions through one stream")
                stream = run_stream(channel, base, f"s{r}", args.decisions)
                log(f"round {r + 1}: {args.unary:,} unary calls, {args.concurrency} in flight")
                parallel = run_unary(channel, base, f"p{r}", args.unary, args.concurrency)
                info["rounds"].append({"unary": unary, "stream": stream, "unary_in_flight": parallel})
        info["server_rss_mib"] = server.rss_mib()
    finally:
        server.stop()
    info["loadavg_end"] = os.getloadavg()
    return publish(info, args.json_out, markdown)


def markdown(m: dict) -> str:
    load = lambda v: "/".join(f"{x:.1f}" for x in v)
    lines = [f"`{m['command']}` (commit `{m['commit']}`, {m['config']}, workers {m['workers']}, "
             f"load average {load(m['loadavg_start'])} -> {load(m['loadavg_end'])})", "",
             "| round | unary 1 in flight /s | stream /s | unary N in flight /s | stream / unary | "
             "stream / unary N | stream answered | item errors | out of order |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(m["rounds"]):
        u, s, p = r["unary"], r["stream"], r["unary_in_flight"]
        lines.append(f"| {i + 1} | {u['per_second']:,.0f} | {s['per_second']:,.0f} | {p['per_second']:,.0f} | "
                     f"{s['per_second'] / u['per_second']:.2f} | {s['per_second'] / p['per_second']:.2f} | "
                     f"{s['answered']:,} of {s['n']:,} | {s['errors']} | {s['out_of_order']} |")
    lines += ["", f"server RSS after the run (MiB per process): {', '.join(f'{x:.0f}' for x in m['server_rss_mib'])}"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
