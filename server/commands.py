"""``placement serve`` and ``placement worker``: the server's commands.

The root command line (``placement_cli``) registers them; each loads the
serving code only when it runs, so ``placement --help`` stays light."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Optional

import typer

from server.config import ConfigError, load_config

def fail(message: str) -> None:
    """Print the error the way every command does, and exit 2."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


def serve(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML configuration file (see README)."),
    host: Optional[str] = typer.Option(None, help="Address to listen on [default: 127.0.0.1]."),
    port: Optional[int] = typer.Option(None, help="Port to listen on; 0 lets the OS choose [default: 50051]."),
    data_dir: Optional[Path] = typer.Option(None, help="Where the event log, joined data and models live "
                                                       "[default: ./placement-data]."),
    workers: int = typer.Option(os.cpu_count() or 1, min=0, max=256,
                                help="Serving processes sharing the port (SO_REUSEPORT), plus one coordinator "
                                     "that joins and learns; 1 serves, joins and learns in one process. "
                                     "[default: number of cores]"),
    coordinator_listen: Optional[str] = typer.Option(
        None, help="Also take serving workers of other hosts (`placement worker`) on this address, e.g. "
                   "0.0.0.0:7001; they share --data-dir (shared storage). Needs the admin token beyond loopback."),
    metrics_port: Optional[int] = typer.Option(None, help="Serve Prometheus metrics on this HTTP port "
                                                          "(loopback; 0 lets the OS choose) [default: off]."),
    log_level: str = typer.Option("INFO", help="Logging level: DEBUG, INFO, WARNING, ERROR."),
    log_format: str = typer.Option("text", help="Log format: 'text' for people, 'json' for log pipelines."),
    pin_cpus: Optional[bool] = typer.Option(None, "--pin-cpus/--no-pin-cpus",
                                            help="Pin each serving process to one allowed CPU (Linux) "
                                                 "[default: off]."),
) -> None:
    """Run the gRPC server (PlacementService, PlacementAdmin, health, reflection)."""
    from server.logs import setup_logging

    try:
        metrics = {"port": metrics_port} if metrics_port is not None else None
        cfg = load_config(config, host=host, port=port, data_dir=data_dir, metrics=metrics, pin_cpus=pin_cpus)
        setup_logging(log_level, log_format)
        if workers > 1 or coordinator_listen:
            from server.workers import Coordinator

            running = Coordinator(cfg, workers, listen=coordinator_listen)
            bound = running.start()
            if coordinator_listen:
                typer.echo(f"coordinator for remote workers on port {running.internal_port}", err=True)
        else:
            from server.app import start_server

            if cfg.pin_cpus:
                from server.affinity import pin_serving_process

                pin_serving_process(0)
            running = start_server(cfg)
            bound = running.port
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    except (OSError, RuntimeError) as exc:
        fail(f"cannot start: {exc}")
    pinned = ", each pinned to a CPU" if cfg.pin_cpus else ""
    typer.echo(f"serving on {cfg.host}:{bound} ({workers} worker{'s' if workers > 1 else ''}{pinned}), "
               f"data in {cfg.data_dir}", err=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    typer.echo("stopping: draining requests and flushing logs", err=True)
    running.stop()


def worker(
    coordinator: str = typer.Option(..., help="The coordinator's address for workers (its --coordinator-listen)."),
    name: str = typer.Option(..., help="This worker's unique name; its decisions go to "
                                       "DATA/events/worker-NAME."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="The same TOML configuration as the "
                                                                      "coordinator's."),
    host: Optional[str] = typer.Option(None, help="Address to serve front-ends on [default: 127.0.0.1]."),
    port: Optional[int] = typer.Option(None, help="Port to serve on [default: 50051]."),
    data_dir: Optional[Path] = typer.Option(None, help="The shared data directory (same as the coordinator's)."),
    log_level: str = typer.Option("INFO", help="Logging level."),
    log_format: str = typer.Option("text", help="'text' or 'json'."),
) -> None:
    """Run one serving worker for a coordinator on another host: decides and logs
    locally, forwards rewards, activations and admin calls, follows published models."""
    from server.logs import setup_logging

    try:
        setup_logging(log_level, log_format)
        cfg = load_config(config, host=host, port=port, data_dir=data_dir)
        if not (Path(cfg.data_dir) / "models").exists():
            raise ConfigError(f"{cfg.data_dir} has no models: start the coordinator first, on the same data directory")
        from server.app import client_credentials
        from server.interceptors import read_token
        from server.workers import run_remote_worker

        if cfg.pin_cpus:  # one process per host or several: only its operator knows which CPU is its own
            typer.echo("warning: pin_cpus applies to `placement serve`; pin a worker with taskset", err=True)
        token = read_token(cfg.security.admin_token_file, cfg.security.admin_token_env, dict(os.environ))
        running = run_remote_worker(cfg, name, coordinator, client_credentials(cfg.security), token)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    except (OSError, RuntimeError) as exc:
        fail(f"cannot start: {exc}")
    typer.echo(f"worker {name} serving on {cfg.host}:{running.port}, coordinator {coordinator}", err=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    running.stop()
