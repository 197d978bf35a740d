"""Server wiring: the two services, standard health checking and reflection,
on one port; start and graceful stop around an :class:`Engine`."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from placement.v1 import placement_pb2 as pb
from placement.v1 import placement_pb2_grpc as pb_grpc
from server.config import ServerConfig
from server.engine import Engine
from server.service import PlacementAdmin, PlacementService

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["PlacementService"].full_name,
    pb.DESCRIPTOR.services_by_name["PlacementAdmin"].full_name,
)


@dataclass
class RunningServer:
    """A started server: its bound port, engine and a stop that drains."""

    server: grpc.Server
    engine: Engine
    port: int
    health: health.HealthServicer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 5.0) -> None:
        for name in (*SERVICE_NAMES, ""):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace).wait()
        self.engine.stop()

    def wait(self) -> None:
        self.server.wait_for_termination()


def start_server(config: ServerConfig, engine: Engine | None = None) -> RunningServer:
    """Start serving; port 0 lets the OS choose (tests)."""
    engine = engine or Engine(config)
    limit = config.limits.max_message_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="rpc"),
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                 ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=config.threads * 8,
    )
    pb_grpc.add_PlacementServiceServicer_to_server(PlacementService(engine), server)
    pb_grpc.add_PlacementAdminServicer_to_server(PlacementAdmin(engine), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"could not listen on {config.host}:{config.port}")
    engine.start()
    server.start()
    for name in (*SERVICE_NAMES, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("placement engine listening on %s:%d (data in %s)", config.host, port, config.data_dir)
    return RunningServer(server, engine, port, health_servicer)
