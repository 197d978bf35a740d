"""The built-in scenarios: TOML files beside this module, found by name.

Light on purpose: ``placement simulate --help`` lists them without loading
the world (:mod:`simulator.world` reads and runs them)."""

from __future__ import annotations

from pathlib import Path

SCENARIO_DIR = Path(__file__).parent
DEFAULT_SCENARIO = "seasonal-retail"


def builtin_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
