"""Measurement D: the engine through gRPC on loopback.

The server is ``placement serve`` in a child process (``--workers N`` is passed
only when ``placement serve --help`` lists it). The load generator runs in its
own processes (multiprocessing, spawn), each with its own channel, sending the
same pre-serialized DecideRequest bytes (no client-side protobuf work):

* closed loop: each client process keeps ``concurrency`` calls in flight;
  completions inside the measurement window give the maximum throughput;
* open loop: each process sends at a fixed rate (its share of the target rate,
  phase-shifted so processes interleave), whether or not earlier calls have
  returned; latency is measured from the *scheduled* send time, so a stalled
  server is not hidden (no coordinated omission). Outstanding calls per process
  are capped; a send that waits for the cap still counts its wait.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import cpu_seconds, rss_mib

DECIDE = "/placement.v1.PlacementService/Decide"


# --- the server ---------------------------------------------------------------------------

def placement_command() -> list[str]:
    script = Path(sys.executable).parent / "placement"
    if script.exists():
        return [str(script)]
    found = shutil.which("placement")
    if found:
        return [found]
    return [sys.executable, "-c", "from placement_cli import main; main()"]


def serve_supports_workers() -> bool:
    out = subprocess.run([*placement_command(), "serve", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}, timeout=60)
    return "--workers" in out.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``placement serve`` on a free loopback port with a fresh data directory."""

    cwd: Path | None = None  # the child's working directory (None: ours)
    env: dict[str, str] | None = None  # the child's environment (None: ours)

    def __init__(self, workers: int | None, gc_off: bool = False, extra_args: tuple[str, ...] = ()):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-serve-"))
        self.port = _free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.command = self._command(workers, gc_off, extra_args)
        self._start()

    def _command(self, workers: int | None, gc_off: bool, extra_args: tuple[str, ...]) -> list[str]:
        base = placement_command()
        if gc_off:  # diagnosis only: the same CLI with Python's cyclic GC disabled
            base = [sys.executable, "-c", "import gc; gc.disable(); from placement_cli import main; main()"]
        cmd = [*base, "serve", "--port", str(self.port), "--data-dir", str(self.dir / "data"),
               "--log-level", "WARNING"]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        return cmd + list(extra_args)

    def _start(self) -> None:
        cmd = self.command
        self._stderr = open(self.dir / "serve.stderr", "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._stderr, cwd=self.cwd,
                                     env=self.env)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import grpc

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}): {self.stderr_tail()}")
            with grpc.insecure_channel(self.target) as ch:
                try:
                    grpc.channel_ready_future(ch).result(timeout=1.0)
                    return
                except grpc.FutureTimeoutError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready after {timeout}s: {self.stderr_tail()}")

    def check(self, payload: bytes, slots: int) -> bytes:
        """One real call: the response parses and fills every slot; returns its bytes."""
        import grpc
        from placement.v1 import placement_pb2 as pb

        with grpc.insecure_channel(self.target) as ch:
            raw = ch.unary_unary(DECIDE)(payload, timeout=30)
        resp = pb.DecideResponse.FromString(raw)
        if len(resp.slots) != slots:
            raise RuntimeError(f"server filled {len(resp.slots)} slots, expected {slots}")
        return raw

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss_mib(self) -> list[float]:
        """Each server process's resident memory, largest first."""
        return sorted(rss_mib(self.proc.pid).values(), reverse=True)

    def stderr_tail(self) -> str:
        self._stderr.flush()
        return (self.dir / "serve.stderr").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class TrivialServer(Server):
    """Measurement G: ``bench.ceiling`` (the real server's gRPC setup, one
    trivial method at Decide's path answering ``response``) in a child process."""

    def __init__(self, response: bytes, interceptors: bool, pinned: bool = False):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-ceiling-"))
        self.port = _free_port()
        self.target = f"127.0.0.1:{self.port}"
        (self.dir / "response.bin").write_bytes(response)
        self.command = [sys.executable, "-m", "bench.ceiling", "--port", str(self.port),
                        "--response", str(self.dir / "response.bin"),
                        *(["--interceptors"] if interceptors else []), *(["--pin-cpus"] if pinned else [])]
        self.cwd = Path(__file__).resolve().parent.parent  # where ``bench`` imports from
        self._start()


# --- the load generator ------------------------------------------------------------------------

@dataclass
class Phase:
    """One measurement phase, sent to every client process."""

    mode: str  # "closed" | "open"
    start_at: float  # time.monotonic() (system-wide on Linux) when the window opens
    duration: float
    warmup: float
    concurrency: int = 4  # closed loop: calls in flight per process
    rate: float = 0.0  # open loop: calls per second per process
    phase: float = 0.0  # open loop: offset of this process's schedule, in intervals
    max_outstanding: int = 64
    channels: int = 4  # connections per client process


@dataclass
class ClientResult:
    completed: int = 0  # completions inside the window
    errors: int = 0
    cap_waits: int = 0  # open loop: sends delayed by the outstanding cap
    latencies_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0


async def _run_phase(target: str, payload: bytes, ph: Phase) -> ClientResult:
    import asyncio

    import grpc

    res = ClientResult()
    end = ph.start_at + ph.duration
    # Several connections per process (a local subchannel pool keeps gRPC from
    # sharing one): with SO_REUSEPORT the kernel spreads *connections* over the
    # server's workers, so a single connection per client could leave a worker idle.
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(ph.channels)]
    calls = [ch.unary_unary(DECIDE) for ch in channels]
    for ch in channels:
        await ch.channel_ready()
    turn = [0]
    try:
        async def one(scheduled: float) -> None:
            turn[0] += 1
            call = calls[turn[0] % len(calls)]
            try:
                await call(payload, timeout=30)
            except grpc.RpcError:
                if ph.start_at <= scheduled < end:
                    res.errors += 1
                return
            done = time.monotonic()
            if ph.start_at <= scheduled < end:
                res.latencies_ms.append((done - scheduled) * 1e3)
                if ph.mode == "closed" and done < end:
                    res.completed += 1
                elif ph.mode == "open":
                    res.completed += 1

        if ph.mode == "closed":
            async def worker() -> None:
                while True:
                    now = time.monotonic()
                    if now >= end:
                        return
                    await one(now)

            begin = ph.start_at - ph.warmup
            await asyncio.sleep(max(0.0, begin - time.monotonic()))
            await asyncio.gather(*(worker() for _ in range(ph.concurrency)))
        else:
            interval = 1.0 / ph.rate
            first = ph.start_at - ph.warmup + ph.phase * interval
            cap = asyncio.Semaphore(ph.max_outstanding)
            tasks = set()

            async def paced(scheduled: float) -> None:
                try:
                    await one(scheduled)
                finally:
                    cap.release()

            i = 0
            while True:
                scheduled = first + i * interval
                if scheduled >= end:
                    break
                delay = scheduled - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if cap.locked():
                    res.cap_waits += 1
                await cap.acquire()
                task = asyncio.ensure_future(paced(scheduled))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.wait(list(tasks), timeout=60)
    finally:
        for ch in channels:
            await ch.close()
    return res


def _client_main(target: str, payload: bytes, tasks: "mp.Queue", results: "mp.Queue", index: int) -> None:
    import asyncio

    while True:
        ph = tasks.get()
        if ph is None:
            return
        t0 = sum(os.times()[:2])
        try:
            res = asyncio.run(_run_phase(target, payload, ph))
        except Exception as exc:  # report, do not hang the parent
            results.put((index, exc))
            continue
        res.cpu_seconds = sum(os.times()[:2]) - t0
        results.put((index, res))


class LoadGenerator:
    """``processes`` client processes, each with its own channel."""

    def __init__(self, target: str, payload: bytes, processes: int):
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.queues = [ctx.Queue() for _ in range(processes)]
        self.procs = [ctx.Process(target=_client_main, args=(target, payload, q, self.results, i), daemon=True)
                      for i, q in enumerate(self.queues)]
        for p in self.procs:
            p.start()

    def run(self, phases: list[Phase], server: Server | None = None) -> tuple[list[ClientResult], float]:
        """Run one phase per process; returns the results and the server's CPU
        seconds spent inside the window."""
        for q, ph in zip(self.queues, phases):
            q.put(ph)
        cpu = 0.0
        if server is not None:
            ph = phases[0]
            time.sleep(max(0.0, ph.start_at - time.monotonic()))
            c0 = server.cpu_seconds()
            time.sleep(max(0.0, ph.start_at + ph.duration - time.monotonic()))
            cpu = server.cpu_seconds() - c0
        out: list[ClientResult] = [None] * len(phases)  # type: ignore[list-item]
        for _ in phases:
            index, res = self.results.get(timeout=phases[0].duration + phases[0].warmup + 180)
            if isinstance(res, Exception):
                raise RuntimeError(f"client process {index} failed: {res!r}")
            out[index] = res
        return out, cpu

    def close(self) -> None:
        for q in self.queues:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def measure_server(payload: bytes, slots: int, workers: int | None, clients: int, concurrency: int,
                   max_seconds: float, latency_seconds: float, warmup: float,
                   fractions: tuple[float, ...], log=print, gc_off: bool = False,
                   config: Path | None = None, pinned: bool = False) -> dict:
    """Max throughput (closed loop) then latency at fractions of it (open loop);
    ``config``: the server's TOML file (None: its defaults); ``pinned``:
    ``placement serve --pin-cpus``."""
    extra = (("--config", str(config)) if config else ()) + (("--pin-cpus",) if pinned else ())
    server = Server(workers, gc_off=gc_off, extra_args=extra)
    gen = None
    try:
        response = server.check(payload, slots)
        gen = LoadGenerator(server.target, payload, clients)
        out = {"command": " ".join(server.command), "request_bytes": len(payload), "response_bytes": len(response),
               "response": response,  # the caller keeps it for G; not JSON
               "max": closed_loop(gen, server, clients, concurrency, max_seconds, warmup), "latency": []}
        max_rate = out["max"]["rate"]
        log(f"    D max {max_rate:8.1f}/s  ({clients}x{concurrency} in flight, "
            f"server {out['max']['server_cores']:.2f} cores)")
        for frac in fractions:
            rate = frac * max_rate
            start = time.monotonic() + 0.5 + warmup
            phases = [Phase("open", start, latency_seconds, warmup, rate=rate / clients, phase=i / clients)
                      for i in range(clients)]
            results, cpu = gen.run(phases, server)
            lat = [x for r in results for x in r.latencies_ms]
            row = {"fraction": frac, "target_rate": rate, "achieved_rate": len(lat) / latency_seconds,
                   "sent": sum(r.completed + r.errors for r in results),
                   "errors": sum(r.errors for r in results), "cap_waits": sum(r.cap_waits for r in results),
                   "p50_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90), "p99_ms": percentile(lat, 99),
                   "server_cores": cpu / latency_seconds}
            out["latency"].append(row)
            log(f"    D {frac:.0%} ({rate:7.1f}/s): p50 {row['p50_ms']:6.2f} ms  p90 {row['p90_ms']:6.2f} ms  "
                f"p99 {row['p99_ms']:6.2f} ms  errors {row['errors']}")
        out["rss_mib"] = server.rss_mib()  # after every phase: each server process, largest first
        log(f"    RSS MiB per server process: {', '.join(f'{r:.0f}' for r in out['rss_mib'])}")
        return out
    finally:
        if gen is not None:
            gen.close()
        server.stop()


def closed_loop(gen: LoadGenerator, server: Server, clients: int, concurrency: int, seconds: float,
                 warmup: float) -> dict:
    """Max throughput: ``concurrency`` calls in flight per client process."""
    lead = 2.0  # time for spawned clients to start and connect
    start = time.monotonic() + lead + warmup
    phases = [Phase("closed", start, seconds, warmup, concurrency=concurrency) for _ in range(clients)]
    results, cpu = gen.run(phases, server)
    lat = [x for r in results for x in r.latencies_ms]
    rate = sum(r.completed for r in results) / seconds
    return {"rate": rate, "in_flight": clients * concurrency, "errors": sum(r.errors for r in results),
            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "server_cores": cpu / seconds,
            "per_cpu_second": rate * seconds / cpu if cpu > 0 else float("nan"),
            "client_cores": sum(r.cpu_seconds for r in results) / (seconds + warmup)}


def measure_ceiling(payload: bytes, response: bytes, slots: int, interceptors: bool, clients: int,
                    concurrency: int, seconds: float, warmup: float, log=print, pinned: bool = False) -> dict:
    """G: max throughput (closed loop, same load generator as D) of a trivial
    call through the real server's gRPC setup answering ``response``
    (``pinned``: on one CPU, as a pinned serving process)."""
    server = TrivialServer(response, interceptors, pinned)
    gen = None
    try:
        if server.check(payload, slots) != response:
            raise RuntimeError("the trivial server did not answer its fixed response")
        gen = LoadGenerator(server.target, payload, clients)
        out = closed_loop(gen, server, clients, concurrency, seconds, warmup)
        log(f"    G ({'interceptors on' if interceptors else 'interceptors off'}{', pinned' if pinned else ''}) {out['rate']:8.1f}/s  "
            f"(server {out['server_cores']:.2f} cores, {out['per_cpu_second']:.0f} calls per CPU-second)")
        return out
    finally:
        if gen is not None:
            gen.close()
        server.stop()
