"""``placement demo``: the README's first command (the work is :mod:`simulator.demo`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer


def demo(
    decisions: int = typer.Option(6000, min=500, max=200_000, help="Decisions to drive through the server."),
    seed: int = typer.Option(7, help="Seed of the synthetic audience and of its clicks."),
    data_dir: Optional[Path] = typer.Option(None, help="Keep the demo's data here (default: a temporary "
                                                       "directory, removed afterwards)."),
) -> None:
    """Start an embedded server on a free loopback port, drive a synthetic audience
    through real gRPC calls with delayed rewards, and show what was learned."""
    from simulator.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    sys.exit(run_demo(decisions=decisions, seed=seed, data_dir=data_dir))
