"""The ``placement`` command line."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from server.config import ConfigError, load_config

app = typer.Typer(
    help="Contextual-bandit placement engine: decide which collection goes into which slot, "
         "learn from rewards, evaluate policies offline.",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


@app.command()
def serve(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML configuration file (see README)."),
    host: Optional[str] = typer.Option(None, help="Address to listen on [default: 127.0.0.1]."),
    port: Optional[int] = typer.Option(None, help="Port to listen on; 0 lets the OS choose [default: 50051]."),
    data_dir: Optional[Path] = typer.Option(None, help="Where the event log, joined data and models live "
                                                       "[default: ./placement-data]."),
    log_level: str = typer.Option("INFO", help="Logging level: DEBUG, INFO, WARNING, ERROR."),
) -> None:
    """Run the gRPC server (PlacementService, PlacementAdmin, health, reflection)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config, host=host, port=port, data_dir=data_dir)
    except ConfigError as exc:
        _fail(str(exc))
    from server.app import start_server

    running = start_server(cfg)
    typer.echo(f"serving on {cfg.host}:{running.port}, data in {cfg.data_dir}", err=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    typer.echo("stopping: draining requests and flushing logs", err=True)
    running.stop()


@app.command()
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


def main() -> None:
    app()
