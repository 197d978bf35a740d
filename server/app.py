"""Server wiring: the two services, standard health checking and reflection,
on one port; start and graceful stop around an :class:`Engine`."""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from placement.v1 import placement_pb2 as pb
from placement.v1 import placement_pb2_grpc as pb_grpc
from server.client import tls_credentials
from server.config import ConfigError, SecurityConfig, ServerConfig
from server.engine import Engine
from server.interceptors import (AuthInterceptor, MalformedRequestInterceptor, MetricsInterceptor,
                                 StreamLimitInterceptor, read_token)
from server.metrics import Metrics
from server.service import PlacementAdmin, PlacementService

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["PlacementService"].full_name,
    pb.DESCRIPTOR.services_by_name["PlacementAdmin"].full_name,
)
DECIDE_STREAM = f"/{SERVICE_NAMES[0]}/DecideStream"  # answers every message, a malformed one too


HEALTH_SECONDS = 0.2


class HealthWatch:
    """Health follows the engine: NOT_SERVING while its log cannot write (a
    full disk: decisions would be refused UNAVAILABLE), SERVING again once it
    can, so a load balancer sends traffic elsewhere meanwhile."""

    def __init__(self, engine, servicer: health.HealthServicer):
        self.engine, self.servicer = engine, servicer
        self._stop = threading.Event()
        self._serving: bool | None = None
        self._thread = threading.Thread(target=self._loop, name="health", daemon=True)

    def start(self) -> None:
        self.set(True)
        self._thread.start()

    def set(self, serving: bool) -> None:
        if serving != self._serving:
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in (*SERVICE_NAMES, ""):
                self.servicer.set(name, status)
            self._serving = serving

    def _loop(self) -> None:
        while not self._stop.wait(HEALTH_SECONDS):
            try:
                self.set(self.engine.writable())
            except Exception:  # noqa: BLE001 -- health must keep answering
                log.exception("health check failed")
                self.set(False)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._serving = None
        self.set(False)


@dataclass
class RunningServer:
    """A started server: its bound port, engine and a stop that drains."""

    server: grpc.Server
    engine: Engine
    port: int
    health: health.HealthServicer
    watch: HealthWatch
    metrics: Metrics | None = None
    metrics_port: int | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 5.0) -> None:
        self.watch.stop()
        self.server.stop(grace).wait()
        self.engine.stop()
        if self.metrics is not None:
            self.metrics.stop()

    def wait(self) -> None:
        self.server.wait_for_termination()


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_auth(security: SecurityConfig, host: str) -> AuthInterceptor:
    """Admin calls are authenticated when a token or mTLS identities are set;
    beyond loopback that is required unless explicitly waived (ConfigError).
    A coordinator checks it before it spawns a worker."""
    try:
        token = read_token(security.admin_token_file, security.admin_token_env, dict(os.environ))
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    auth = AuthInterceptor(token, security.admin_identities, security.protect_all)
    if not is_loopback(host) and not auth.enabled and not security.allow_unauthenticated_admin:
        raise ConfigError(
            f"refusing to listen on {host} with PlacementAdmin unauthenticated: set an admin token "
            f"(security.admin_token_file or ${security.admin_token_env}) or mTLS admin_identities, "
            "or security.allow_unauthenticated_admin = true")
    return auth


def server_credentials(security: SecurityConfig) -> grpc.ServerCredentials | None:
    if not security.tls:
        return None
    cert = open(security.tls_cert_file, "rb").read()
    key = open(security.tls_key_file, "rb").read()
    if security.tls_client_ca_file is None:
        return grpc.ssl_server_credentials([(key, cert)])
    ca = open(security.tls_client_ca_file, "rb").read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def client_credentials(security: SecurityConfig) -> grpc.ChannelCredentials | None:
    """How a remote worker reaches a TLS coordinator: trust the configured CA
    (the client CA file doubles as the coordinator's CA) and present our pair."""
    if not security.tls:
        return None
    return tls_credentials(security.tls_client_ca_file, security.tls_cert_file, security.tls_key_file)


def start_server(config: ServerConfig, engine=None, *, admin_handler: grpc.GenericRpcHandler | None = None,
                 reuse_port: bool = False) -> RunningServer:
    """Start serving; port 0 lets the OS choose (tests). A serving worker of
    the multi-process mode passes its own engine, a handler that forwards admin
    calls, and ``reuse_port`` to share the port with its siblings."""
    auth = admin_auth(config.security, config.host)
    credentials = server_credentials(config.security)
    engine = engine or Engine(config)
    metrics = Metrics(engine) if admin_handler is None else None
    limits = config.limits
    interceptors = [StreamLimitInterceptor(limits.max_streams, limits.stream_idle_seconds), auth,
                    MalformedRequestInterceptor(answered_per_item=(DECIDE_STREAM,))]
    if metrics is not None:
        interceptors.insert(0, MetricsInterceptor(metrics))
    # Streams hold a thread each for their whole life: they get max_streams
    # threads of their own, so `threads` always remain for unary calls and health.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.threads + limits.max_streams, thread_name_prefix="rpc"),
        interceptors=interceptors,
        options=[("grpc.max_receive_message_length", limits.max_message_bytes),
                 ("grpc.max_send_message_length", limits.max_message_bytes), ("grpc.so_reuseport", int(reuse_port))],
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
    )
    pb_grpc.add_PlacementServiceServicer_to_server(PlacementService(engine), server)
    if admin_handler is None:
        pb_grpc.add_PlacementAdminServicer_to_server(PlacementAdmin(engine), server)
    else:
        server.add_generic_rpc_handlers((admin_handler,))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{config.host}:{config.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not listen on {address}")
    engine.start()
    gc.collect()
    gc.freeze()  # start-up objects (models, catalog, modules) are never garbage: stop scanning them
    server.start()
    watch = HealthWatch(engine, health_servicer)
    watch.start()
    metrics_port = None
    if metrics is not None and config.metrics.port is not None:
        metrics_port = metrics.serve(config.metrics.host, config.metrics.port)
    log.info("placement engine listening on %s:%d (%s, admin %s, data in %s)", config.host, port,
             "TLS" if credentials else "plaintext", "authenticated" if auth.enabled else "open",
             config.data_dir)
    return RunningServer(server, engine, port, health_servicer, watch, metrics, metrics_port)
