"""How long a checkpoint holds the engine's lock (which every decide waits
for) to take the joiner's state, at 2,000 and 8,000 pending 50x3 decisions:
the whole snapshot (as before) against the capture taken now, in one process.

    .venv/bin/python -m bench.checkpoint_lock
"""

import time
from bench.inproc import EngineInProc
from bench.workload import make_workload
eng = EngineInProc(make_workload(50, 3, 7))
j = eng.engine.joiner
for n in (2000, 8000):
    while len(j) < n:
        eng.step()
    with eng.engine._lock:
        old, new = [], []
        for _ in range(5):
            t = time.perf_counter(); j.snapshot(); old.append(time.perf_counter() - t)
            t = time.perf_counter(); j.capture(); new.append(time.perf_counter() - t)
    print(f"pending {len(j)}: under the lock snapshot() {1e3*min(old):.1f} ms, capture() {1e3*min(new):.2f} ms (best of 5)")
eng.close()
