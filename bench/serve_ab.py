"""D for two (or more) checkouts of the engine, alternating: is the server faster?

  .venv/bin/python -m bench.serve_ab --checkout old=/work/wt/old --checkout new=. [--rounds 3]
  .venv/bin/python -m bench.serve_ab --checkout full=. --checkout top1=.@1   # max_ranking 0 vs 1

Each round starts ``placement serve --workers 1`` (``--workers``) from every
checkout in turn (the order alternates between rounds), with this venv's
Python and ``PYTHONPATH=CHECKOUT:CHECKOUT/proto`` (so the checkout's own
``bandit``, ``server`` and generated ``placement`` code serve), and measures
the same things as ``bench.decide``'s D on the same seeded request: max
decisions/s (closed loop), server CPU per decision, and with ``--p99`` the
p50/p99 at 70 % of that max (open loop, from the scheduled send time).
``PATH@N`` sends that checkout requests with ``max_ranking = N`` (the field
must exist there). Ratios are taken within a round (each checkout against the first one), so a
machine whose speed drifts between rounds still compares like with like.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench.grpc_load import LoadGenerator, Phase, Server, closed_loop, percentile
from bench.workload import make_workload


class CheckoutServer(Server):
    """``placement serve`` running one checkout's code."""

    def __init__(self, checkout: Path, workers: int, extra_args: tuple[str, ...] = ()):
        root = checkout.resolve()
        self.env = {**os.environ, "PYTHONPATH": f"{root}:{root / 'proto'}"}
        self.cwd = root
        # The console script's root: placement_cli since the layering, server.cli before it.
        self.entry = ("from placement_cli import main; main()" if (root / "placement_cli.py").exists()
                      else "from server.cli import app; app()")
        super().__init__(workers, extra_args=extra_args)

    def _command(self, workers, gc_off, extra_args):
        cmd = super()._command(workers, gc_off, extra_args)
        return [sys.executable, "-c", self.entry, *cmd[cmd.index("serve"):]]


def request(cands: int, slots: int, seed: int, max_ranking: int) -> bytes:
    from placement.v1 import placement_pb2 as pb

    req = pb.DecideRequest.FromString(make_workload(cands, slots, seed).request_bytes())
    if max_ranking:
        req.max_ranking = max_ranking
    return req.SerializeToString()


def measure(checkout: Path, payload: bytes, slots: int, args) -> dict:
    server = CheckoutServer(checkout, args.workers)
    gen = None
    try:
        server.check(payload, slots)
        gen = LoadGenerator(server.target, payload, args.clients)
        out = closed_loop(gen, server, args.clients, args.concurrency, args.seconds, 1.0)
        if args.p99:
            rate = 0.7 * out["rate"]
            start = time.monotonic() + 0.5 + 1.0
            phases = [Phase("open", start, args.seconds, 1.0, rate=rate / args.clients, phase=i / args.clients)
                      for i in range(args.clients)]
            results, _ = gen.run(phases, server)
            lat = [x for r in results for x in r.latencies_ms]
            out["p50_70"], out["p99_70"] = percentile(lat, 50), percentile(lat, 99)
        return out
    finally:
        if gen is not None:
            gen.close()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.serve_ab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", action="append", required=True, metavar="NAME=PATH",
                    help="a checkout to serve from (twice or more; the first is the baseline)")
    ap.add_argument("--config", default="50x3", help="candidates x slots [50x3]")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0, help="measurement window [4]")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--p99", action="store_true", help="also p50/p99 at 70 %% of each max")
    args = ap.parse_args(argv)
    cands, slots = map(int, args.config.split("x"))
    named, payloads = [], {}
    for spec in args.checkout:
        name, _, where = spec.partition("=")
        path, _, depth = where.partition("@")
        named.append((name, path))
        payloads[name] = request(cands, slots, args.seed, int(depth or 0))
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    rows: dict[str, list[dict]] = {name: [] for name, _ in named}
    for r in range(args.rounds):
        order = named if r % 2 == 0 else named[::-1]
        for name, path in order:
            res = measure(Path(path), payloads[name], slots, args)
            rows[name].append(res)
            extra = f", p99 at 70 % {res['p99_70']:.1f} ms" if args.p99 else ""
            print(f"round {r + 1} {name}: {res['rate']:.0f}/s, server {res['server_cores']:.2f} cores, "
                  f"{res['per_cpu_second']:.0f} per CPU-s{extra}", file=sys.stderr)
    base = named[0][0]
    summary = {"config": args.config, "workers": args.workers, "checkouts": args.checkout,
               "load_end": os.getloadavg()}
    for name, _ in named:
        summary[name] = {k: round(statistics.median(x[k] for x in rows[name]), 2)
                         for k in ("rate", "per_cpu_second", "server_cores", *(("p50_70", "p99_70") if args.p99 else ()))}
        if name != base:
            summary[f"{name}/{base}"] = {
                k: [round(a[k] / b[k], 3) for a, b in zip(rows[name], rows[base])] for k in ("rate", "per_cpu_second")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
