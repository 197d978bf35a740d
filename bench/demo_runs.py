"""Run ``placement demo`` over several seeds and report each run's worst cell.

Usage: .venv/bin/python -m bench.demo_runs --seeds 1-10

The demo is deterministic per seed (its rounds are settled, never timed), so a
seed's table is the same on any machine; this shows how the table varies over
seeds: the smallest P(best) and share of the planted best served per run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

PLACEMENT = str(Path(sys.executable).with_name("placement"))
ROW = re.compile(r"^\s+(homepage|email|detail_page)\s+\S+\s+(\d+)%\s+([\d.]+)\s+([\d.]+)%", re.M)


def seeds(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-10")
    parser.add_argument("--decisions", type=int, default=6000)
    args = parser.parse_args()
    worst = []
    print("seed  min P(best)  min chosen  max explore")
    for seed in seeds(args.seeds):
        out = subprocess.run([PLACEMENT, "demo", "--seed", str(seed), "--decisions", str(args.decisions)],
                             capture_output=True, text=True, env={"COLUMNS": "100", "PATH": ""}, check=True).stdout
        rows = [(int(c), float(p), float(e)) for _, c, p, e in ROW.findall(out)]
        assert len(rows) == 9, out
        p_min, chosen_min, explore_max = min(r[1] for r in rows), min(r[0] for r in rows), max(r[2] for r in rows)
        worst.append(p_min)
        print(f"{seed:4d}  {p_min:11.2f}  {chosen_min:9d}%  {explore_max:10.1f}%")
    print(f"runs: {len(worst)}; runs with a cell below 0.9: {sum(p < 0.9 for p in worst)}; "
          f"lowest cell over all runs: {min(worst):.2f}")


if __name__ == "__main__":
    main()
