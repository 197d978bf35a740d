"""Measurement G: what the Python gRPC layer costs by itself.

``python -m bench.ceiling --port P --response FILE [--interceptors]`` serves
one trivial unary method at Decide's path: it returns the bytes of FILE (a real
Decide response of the config, captured from ``placement serve``) whatever it
is sent. The server is built as ``server.app.start_server`` builds the real one:
the same thread pool size (``threads + limits.max_streams``), message limits,
``maximum_concurrent_rpcs``, and with ``--interceptors`` the same interceptor
chain (metrics, stream limit, auth, malformed request). The handler's
(de)serializers are the identity, so the malformed-request interceptor wraps
them as it wraps protobuf's, but no protobuf work is done: G is the ceiling of
the transport, not of the service. The bench driver (``bench.grpc_load``) sends
the config's real DecideRequest bytes with the same load generator as D.

L = 1 / (1/A + 1/G) is then the most one serving process could do: bare VW's
predict plus an empty gRPC call, nothing else.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

from server.config import ServerConfig
from server.interceptors import (
    AuthInterceptor,
    MalformedRequestInterceptor,
    MetricsInterceptor,
    StreamLimitInterceptor,
)
from server.metrics import Metrics

SERVICE = "placement.v1.PlacementService"


def _identity(data: bytes) -> bytes:
    return data


def interceptor_chain(config: ServerConfig) -> list[grpc.ServerInterceptor]:
    """The real server's chain, in its order (server.app.start_server), on loopback
    without a token: auth passes every call through as it does there. Metrics
    reads the engine only when scraped, and nobody scrapes this server."""
    limits = config.limits
    return [MetricsInterceptor(Metrics(None)),  # type: ignore[arg-type]
            StreamLimitInterceptor(limits.max_streams, limits.stream_idle_seconds),
            AuthInterceptor(None, config.security.admin_identities, config.security.protect_all),
            MalformedRequestInterceptor()]


def trivial_server(port: int, response: bytes, interceptors: bool) -> grpc.Server:
    """A started server answering ``response`` to every Decide call."""
    config = ServerConfig()
    limits = config.limits

    def decide(request: bytes, context: grpc.ServicerContext) -> bytes:
        return response

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Decide": grpc.unary_unary_rpc_method_handler(decide, request_deserializer=_identity,
                                                      response_serializer=_identity)})
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.threads + limits.max_streams, thread_name_prefix="rpc"),
        interceptors=interceptor_chain(config) if interceptors else None,
        options=[("grpc.max_receive_message_length", limits.max_message_bytes),
                 ("grpc.max_send_message_length", limits.max_message_bytes), ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
    )
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"could not listen on 127.0.0.1:{port}")
    server.start()
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--response", type=Path, required=True, help="the bytes every call returns")
    ap.add_argument("--interceptors", action="store_true", help="the real server's interceptor chain")
    ap.add_argument("--pin-cpus", action="store_true", help="pinned as `placement serve --pin-cpus` pins")
    args = ap.parse_args(argv)
    if args.pin_cpus:
        from server.affinity import pin_serving_process

        pin_serving_process(0)
    server = trivial_server(args.port, args.response.read_bytes(), args.interceptors)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
