"""Server interceptors: who may call what, and what every call cost.

gRPC Python interceptors see only the method name and metadata, not the peer's
certificate, so both interceptors wrap the method handler and do their work
inside it, where the servicer context (auth context, status) is available.
"""

from __future__ import annotations

import hmac
import queue
import threading
import time
from typing import Any, Callable, Iterator

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


class MalformedMessage:
    """What a stream answered per message sees in place of bytes that are not
    its request message (see MalformedRequestInterceptor)."""

    def __init__(self, error: Exception):
        self.error = error


def _lenient(deserializer):
    """A deserializer that reports bad bytes instead of raising (which gRPC
    would turn into an opaque INTERNAL error)."""
    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:
            return MalformedMessage(exc)
    return parse


def malformed_message(method: str) -> str:
    """The one wording for bytes that are not ``method``'s request message."""
    return f"request is not a valid {method.rsplit('/', 1)[-1]} message"


class MalformedRequestInterceptor(grpc.ServerInterceptor):
    """Bytes that are not the expected message get INVALID_ARGUMENT. Streams
    named in ``answered_per_item`` (full method names) answer every message,
    so a malformed one reaches the servicer as a MalformedMessage and gets
    its own error while the stream goes on."""

    def __init__(self, answered_per_item: tuple[str, ...] = ()):
        self.answered_per_item = frozenset(answered_per_item)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        streaming = handler.request_streaming
        method = handler_call_details.method
        if streaming and method in self.answered_per_item:
            return handler._replace(request_deserializer=_lenient(handler.request_deserializer))

        def refuse(context):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, malformed_message(method))

        def checked(iterator, context):
            for item in iterator:
                if isinstance(item, MalformedMessage):
                    refuse(context)
                yield item

        def around(behaviour):
            def guarded(request, context):
                if streaming:
                    return behaviour(checked(request, context), context)
                if isinstance(request, MalformedMessage):
                    refuse(context)
                return behaviour(request, context)
            return guarded

        wrapped = _wrap(handler, around)
        return wrapped._replace(request_deserializer=_lenient(handler.request_deserializer))


class StreamLimitInterceptor(grpc.ServerInterceptor):
    """Streaming calls last as long as their client likes, and gRPC Python
    serves each on one handler thread for its whole life: 16 quiet
    DecideStreams used to hold all 16 threads, and every other call, health
    checks included, waited for a thread until its deadline. So at most
    ``max_streams`` streaming calls (any service) are open at once, beyond
    that RESOURCE_EXHAUSTED at once, and the server's pool has that many
    threads on top of the ones unary calls use (see app.start_server). A
    request stream whose client sends nothing for ``idle_seconds`` is ended,
    so a stalled client gives its place back without a deadline of its own."""

    def __init__(self, max_streams: int, idle_seconds: float):
        self.max_streams = max_streams
        self.idle_seconds = idle_seconds
        self.places = threading.BoundedSemaphore(max_streams)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler

        def around(behaviour):
            def bounded(request, context):
                self._take_place(context)
                if handler.request_streaming:
                    request = IdleLimitedRequests(request, context, self.idle_seconds)
                return behaviour(request, context)
            return bounded

        return _wrap(handler, around)

    def _take_place(self, context: grpc.ServicerContext) -> None:
        """A place until the call has ended, however it ends (gRPC runs the
        callbacks once the status is sent or the client is gone)."""
        if not self.places.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.max_streams} streaming calls are already open on this server "
                          "(limits.max_streams): retry later, or send more requests on an open stream")
        if not context.add_callback(self.places.release):  # the call has already ended
            self.places.release()


class IdleLimitedRequests(Iterator[Any]):
    """A stream's requests, read by a helper thread so that waiting for the
    next one can give up: gRPC's own request iterator blocks until the client
    sends or goes away. After ``idle_seconds`` without a request the call is
    ended with DEADLINE_EXCEEDED. The hand-over queue is small, so gRPC's flow
    control still holds a fast client back."""

    BUFFER = 16

    def __init__(self, requests: Iterator[Any], context: grpc.ServicerContext, idle_seconds: float):
        self.context = context
        self.idle_seconds = idle_seconds
        self.queue: queue.Queue = queue.Queue(self.BUFFER)
        self.ended = threading.Event()
        if not context.add_callback(self.ended.set):
            self.ended.set()
        threading.Thread(target=self._read, args=(requests,), name="stream-reader", daemon=True).start()

    def _read(self, requests: Iterator[Any]) -> None:
        """Until the client half-closes or the call ends (then gRPC's iterator
        stops or raises, and this thread ends with it)."""
        try:
            for request in requests:
                if not self._hand_over((request,)):
                    return
            self._hand_over(())
        except Exception as exc:  # grpc.RpcError: the client cancelled
            self._hand_over(exc)

    def _hand_over(self, item: tuple | Exception) -> bool:
        while not self.ended.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self) -> Any:
        item = self._next_item()
        if item is None:
            self.context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"no request on this stream for {self.idle_seconds:g} s "
                               "(limits.stream_idle_seconds): the stream is ended; answers already sent stand")
        if isinstance(item, Exception):
            raise item
        if not item:
            raise StopIteration
        return item[0]

    def _next_item(self) -> tuple | Exception | None:
        """The next hand-over, () when the call ended meanwhile (a client
        deadline or cancel: its handler thread is freed at once, not after the
        idle time), None after idle_seconds without one."""
        deadline = time.monotonic() + self.idle_seconds
        while True:
            try:
                return self.queue.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
            except queue.Empty:
                if self.ended.is_set():
                    return ()
                if time.monotonic() >= deadline:
                    return None


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
