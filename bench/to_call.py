"""The wire request into the engine's call (``server.service.to_call``) at
50x3: candidates with their features (D's request), and named by id from the
catalog. Best of 15 x 200 calls, in µs.

    PYTHONPATH=CHECKOUT .venv/bin/python -m bench.to_call

Run it for two checkouts alternately (the same venv) to compare.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import timeit
from pathlib import Path

from bandit.catalog import Collection
from bench.workload import feature_groups, make_workload
from placement.v1 import placement_pb2 as pb
from server.client import decide_request
from server.config import load_config
from server.engine import Engine
from server.service import PlacementService, to_call


def main() -> None:
    w = make_workload(50, 3, 7)
    data = Path(tempfile.mkdtemp(prefix="bench-to-call-"))
    engine = Engine(load_config(None, port=0, data_dir=data))
    try:
        engine.catalog.put(Collection(cid, feature_groups(f)) for cid, f in w.collections)
        requests = {"features": pb.DecideRequest.FromString(w.request_bytes()),
                    "by_id": decide_request(w.context, [s for s, _ in w.slot_specs], [c for c, _ in w.collections])}
        service = PlacementService(engine)
        caches = (service.known, service.lists) if hasattr(service, "lists") else (service.known,)
        out = {}
        for name, req in requests.items():
            to_call(req, engine, *caches)
            best = min(timeit.repeat(lambda: to_call(req, engine, *caches), number=200, repeat=15))
            out[f"{name}_us"] = round(best / 200 * 1e6, 1)
        print(json.dumps(out))
    finally:
        engine.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
