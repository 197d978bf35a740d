"""Server interceptors: who may call what, and what every call cost.

gRPC Python interceptors see only the method name and metadata, not the peer's
certificate, so both interceptors wrap the method handler and do their work
inside it, where the servicer context (auth context, status) is available.
"""

from __future__ import annotations

import hmac
import time
from typing import Callable

import grpc

from server.metrics import Metrics

ADMIN_PREFIX = "/placement.v1.PlacementAdmin/"
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # probes, never protected

Check = Callable[[grpc.ServicerContext], None]


def _wrap(handler: grpc.RpcMethodHandler, around: Callable) -> grpc.RpcMethodHandler:
    """The same handler with ``around(behaviour)`` applied to its behaviour."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(around(handler.unary_unary), handler.request_deserializer,
                                                   handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(around(handler.unary_stream), handler.request_deserializer,
                                                    handler.response_serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(around(handler.stream_unary), handler.request_deserializer,
                                                    handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(around(handler.stream_stream), handler.request_deserializer,
                                                 handler.response_serializer)


class _Malformed:
    def __init__(self, error: Exception):
        self.error = error


def _lenient(deserializer):
    """A deserializer that reports bad bytes instead of raising (which gRPC
    would turn into an opaque INTERNAL error)."""
    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:
            return _Malformed(exc)
    return parse


class MalformedRequestInterceptor(grpc.ServerInterceptor):
    """Bytes that are not the expected message get INVALID_ARGUMENT."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        streaming = handler.request_streaming

        def refuse(context):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"request is not a valid {handler_call_details.method.rsplit('/', 1)[-1]} message")

        def checked(iterator, context):
            for item in iterator:
                if isinstance(item, _Malformed):
                    refuse(context)
                yield item

        def around(behaviour):
            def guarded(request, context):
                if streaming:
                    return behaviour(checked(request, context), context)
                if isinstance(request, _Malformed):
                    refuse(context)
                return behaviour(request, context)
            return guarded

        wrapped = _wrap(handler, around)
        return wrapped._replace(request_deserializer=_lenient(handler.request_deserializer))


class AuthInterceptor(grpc.ServerInterceptor):
    """Admin calls (and, if asked, every placement call) need the bearer token
    or a client certificate whose common name is allowed. Health checks and
    reflection stay open for probes."""

    def __init__(self, token: str | None, identities: tuple[str, ...] = (), protect_all: bool = False,
                 trust_unix_peers: bool = False):
        self.token = token.encode() if token else None
        self.identities = {i.encode() for i in identities}
        self.protect_all = protect_all
        # Local workers on the coordinator's Unix socket (file mode 0600) need no token.
        self.trust_unix_peers = trust_unix_peers

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.identities)

    def _protected(self, method: str) -> bool:
        """Admin calls; with ``protect_all`` every call but health checks and
        reflection (on a coordinator's port that includes the workers' own calls)."""
        return method.startswith(ADMIN_PREFIX) or (self.protect_all and not method.startswith(OPEN_PREFIXES))

    def _check(self, context: grpc.ServicerContext) -> None:
        if self.trust_unix_peers and context.peer().startswith("unix:"):
            return
        names = set(context.auth_context().get("x509_common_name", []))
        if self.identities & names:
            return
        metadata = dict(context.invocation_metadata())
        offered = metadata.get("authorization", "")
        if self.token and offered.startswith("Bearer ") and hmac.compare_digest(offered[7:].encode(), self.token):
            return
        if offered:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "credentials are not allowed to call this method")
        context.abort(grpc.StatusCode.UNAUTHENTICATED,
                      "this method needs 'authorization: Bearer <admin token>' or an allowed client certificate")

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not self.enabled or not self._protected(handler_call_details.method):
            return handler

        def around(behaviour):
            def guarded(request, context):
                self._check(context)
                return behaviour(request, context)
            return guarded

        return _wrap(handler, around)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts calls by method and status and times unary calls."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]

        def around(behaviour):
            def timed(request, context):
                start = time.perf_counter()
                code = grpc.StatusCode.OK
                try:
                    return behaviour(request, context)
                except Exception:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                finally:
                    self.metrics.observe_call(method, code, time.perf_counter() - start)
            return timed

        return _wrap(handler, around)


def read_token(path, env_name: str, environ: dict) -> str | None:
    """The admin token from its file, else from the environment; never logged.
    Surrounding whitespace (a file's or a secret's trailing newline) is not part
    of it; a file or variable that holds nothing else is a configuration error,
    never a token anyone could send."""
    if path is not None:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
        if not token:
            raise ValueError(f"admin token file {path} is empty")
        return token
    if env_name not in environ:
        return None
    token = environ[env_name].strip()
    if not token:
        raise ValueError(f"${env_name} is set but empty (or only whitespace): set a token or unset it")
    return token
