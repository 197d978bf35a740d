"""Multi-process serving: ``placement serve --workers N``.

Python serves one request at a time per process, so decisions scale by
processes. N serving workers share the port (``SO_REUSEPORT``; the kernel
spreads connections), each with its own VW workspaces. Each worker logs its
decisions to its own event log (``events/worker-K``) before answering, and
picks up new model versions and catalog changes from the data directory
(checked on every request: an acknowledged change is what the next one sees).

One coordinator process owns everything that needs a single writer: it tails
the workers' decision logs, takes rewards and activations (workers forward
them, and admin calls, over a Unix socket in the data directory), joins,
learns and publishes model versions. A reward can reach the coordinator before
its tailer has read the decision; the decision was logged before the client
saw it, so the coordinator reads the logs once more before calling an event
unknown. It also owns the callers' event ids: a worker claims one before it
logs a decision under it, so a Decide retried on any worker, or after any
restart, gets the decision the id already has (the coordinator knows every
pending one), and ALREADY_EXISTS once it has joined. A duplicate that reaches
a log anyway (two workers writing a claimed decision) is joined once: the
first one logged wins.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
import uuid
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Callable

import grpc

from bandit.catalog import Catalog
from bandit.lru import LRU
from bandit.logformat.events import DecisionEvent, UnservedEvent, dumps, event_from_record, event_line, event_to_record
from bandit.decision import Mode
from bandit.policy import Policy
from placement.v1 import placement_pb2 as pb
from placement.v1 import placement_pb2_grpc as pb_grpc
from server import affinity
from server.app import admin_auth, start_server
from server.claims import CLAIM, ClaimBatcher, Relayed, Verdict, answer_claims
from server.config import ServerConfig
from server.engine import DecideCall, Engine, caller_gone, check_pending, lookup_surface, make_decision
from server.eventlog import AppendLog, Ticket
from server.explain import Explainer, Explanation
from server.interceptors import AuthInterceptor, MalformedRequestInterceptor, read_token
from server.stats import Stats
from server.metrics import Metrics
from server.modelstore import ModelStore
from server.service import PlacementAdmin, PlacementService, caller_timeout, stats_from_pb
from server.sharedcounts import FILE_NAME as COUNTS_FILE, SharedCounts, read_counts, reset_counts

log = logging.getLogger(__name__)

REFRESH_SECONDS = 0.2
TAIL_SECONDS = 0.02
CLAIM_SECONDS = 5.0
# Callers' ids a worker remembers writing, each with its decision (~15 KB at 50x3, measured
# with tracemalloc): the race it closes lasts one claim's round trip (ms), not seconds.
WRITTEN_LATELY = 256
# A worker's link to its coordinator reconnects within 0.5 s of a restart
# (grpc's default backoff grows to 120 s): until it does, Reward, Activate and
# Decides with an event id are UNAVAILABLE.
COORDINATOR_CHANNEL = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


def coordinator_away(event_id: str, err: grpc.RpcError) -> Relayed:
    """A caller's event id could not be claimed: nothing decided or logged."""
    return Relayed(grpc.StatusCode.UNAVAILABLE,
                   f"event '{event_id}' not decided: the coordinator, which keeps a caller's event ids unique "
                   f"across workers, did not answer ({err.code().name}); nothing was logged, retry with the same "
                   "event id (a Decide without an event id needs no coordinator)")


def forward_timeout(context: grpc.ServicerContext, bound: float) -> tuple[float, bool]:
    """How long a call passed to the coordinator for this caller may take: its
    time left, else ``bound`` (limits.forward_timeout_seconds); and whether
    the bound it is."""
    left = caller_timeout(context)
    return (bound, True) if left is None else (left, False)


def relayed(err: grpc.RpcError, bounded: bool, bound: float) -> Relayed | grpc.RpcError:
    """The coordinator's failure as this worker answers it: as given, except
    that a call the caller set no deadline for, cut at ``bound``, says so."""
    if bounded and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Relayed(grpc.StatusCode.DEADLINE_EXCEEDED,
                       f"the coordinator did not answer within limits.forward_timeout_seconds ({bound:g} s, the "
                       "bound for a call without a deadline); it may still take effect")
    return err


def worker_log_dir(data_dir: Path, name: str | int) -> Path:
    return Path(data_dir) / "events" / f"worker-{name}"


PENDING_GAUGE = ("pending",)


def pending_path(data_dir: Path) -> Path:
    """Where the coordinator publishes how many decisions wait for their join,
    so that workers refuse new ones at limits.max_pending_decisions."""
    return Path(data_dir) / "events" / "pending.bin"


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / "coordinator.sock"


# --- serving worker -----------------------------------------------------------

FileStamp = tuple[int, int, int] | None


def file_stamp(path: Path) -> FileStamp:
    """Identity of a file that is replaced atomically (new inode, time, size):
    one stat, so a worker can check it on every request."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class Followed:
    """A value loaded from a file another process replaces (the catalog, a
    model's CURRENT pointer). ``get`` checks the file (one stat) and loads a
    new value when it changed: a change acknowledged before a request arrives
    is what that request sees (the writer replaces the file before it answers)."""

    def __init__(self, path: Path, load: Callable[[], object], what: str):
        self.path, self._load, self.what = path, load, what
        self._lock = threading.Lock()
        self._stamp = file_stamp(path)
        self.value = load()

    def get(self):
        if file_stamp(self.path) != self._stamp:
            with self._lock:  # one loader; the others then find it loaded
                stamp = file_stamp(self.path)
                if stamp != self._stamp:
                    try:
                        self.value = self._load()
                    except Exception:
                        log.exception("could not load the new %s; serving the last good one", self.what)
                    self._stamp = stamp
        return self.value


class ServingSurface:
    """A surface's serving policy in a worker: the published version (CURRENT)."""

    def __init__(self, name: str, mode: Mode, settings, store: ModelStore):
        self.name, self.mode, self.settings, self.store = name, mode, settings, store
        self._policy = Followed(store.directory / "CURRENT", self._load, f"model of surface '{name}'")

    def _load(self) -> Policy:
        info = self.store.current()
        return Policy(self.settings, model_path=self.store.path(info.version), version=str(info.version))

    @property
    def serving(self) -> Policy:
        return self._policy.get()

    @property
    def version(self) -> str:
        return self.serving.version

    def refresh(self) -> None:
        self._policy.get()


class WorkerEngine:
    """The serving half of the engine: decide and log; rewards, activations and
    admin calls go to the coordinator."""

    def __init__(self, config: ServerConfig, index: int | str, coordinator: grpc.Channel,
                 metadata: tuple[tuple[str, str], ...] = ()):
        data = Path(config.data_dir)
        self.config, self.index = config, index
        self.metadata = metadata
        self._catalog = Followed(data / "catalog.json", lambda: Catalog(data / "catalog.json", config.limits.features),
                                 "catalog")
        log_dir = worker_log_dir(data, index)
        self.events = AppendLog(log_dir, "events", fsync=config.log.fsync, segment_bytes=config.log.segment_bytes)
        self.surfaces = {name: ServingSurface(name, Mode(s.mode), s.learning,
                                              ModelStore(data / "models" / name, keep=config.learner.keep_versions))
                         for name, s in config.surfaces.items()}
        self.counts = SharedCounts(log_dir / COUNTS_FILE)  # what this worker rejects; the coordinator adds them up
        self.explainer = Explainer(config.limits.explain_max_features, config.limits.explain_max_concurrent)
        self._service = pb_grpc.PlacementServiceStub(coordinator)
        self._admin = pb_grpc.PlacementAdminStub(coordinator)
        self._claims = ClaimBatcher(coordinator.unary_unary(CLAIM), CLAIM_SECONDS, metadata)
        # Decisions submitted to this worker's log, not yet written: a
        # concurrent call with the same id waits for the write.
        self._unwritten: dict[str, tuple[DecisionEvent, Ticket]] = {}
        # Callers' ids this worker wrote lately: a concurrent call with the id, told by
        # the coordinator that it is claimed but not yet read from the log, finds the
        # decision here once its write is done (else it wrote a second copy).
        self._written_lately: LRU[str, tuple[DecisionEvent, Ticket]] = LRU(WRITTEN_LATELY)
        self._pending_path = pending_path(data)
        self.coordinator_pending = 0  # the coordinator's pending decisions, read every refresh
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, name="refresh", daemon=True)

    @property
    def catalog(self) -> Catalog:
        return self._catalog.get()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.events.close()
        self.counts.flush()

    def drain(self) -> None:
        self.stop()

    def writable(self) -> bool:
        """Whether this worker's decision log takes writes (health follows it)."""
        return self.events.writable

    def stats(self) -> Stats:
        """The coordinator's snapshot: it counts every worker."""
        return stats_from_pb(self._forward(self._admin.GetStats, pb.StatsRequest(), None))

    def _refresh_loop(self) -> None:
        """Load what changed while no request came (requests check for themselves)."""
        failing = None  # the error of the last failed refresh: its traceback is logged once, not 5 times a second
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                for surface in self.surfaces.values():
                    surface.refresh()
                self._catalog.get()
                self.counts.flush()
                self.coordinator_pending = read_counts(self._pending_path, PENDING_GAUGE)["pending"]
                failing = None
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if error != failing:
                    log.exception("worker %s: refresh failed; serving the last good model", self.index)
                else:
                    log.debug("worker %s: refresh still failing: %s", self.index, error)
                failing = error

    def surface(self, name: str) -> ServingSurface:
        return lookup_surface(self.surfaces, name)

    def decide(self, call: DecideCall, wanted: Callable[[], bool] | None = None) -> DecisionEvent:
        """As :meth:`Engine.decide`. A caller's event id is claimed at the
        coordinator first (it owns them: a retry reaching another worker, or
        this one after a restart, gets the decision the id already has; see
        :meth:`Engine.claim`); a generated id is new and asks nobody. An
        unserved marker goes to this worker's log, after its decision, for the
        coordinator to drop it."""
        surface = self.surface(call.surface)
        event_id = call.event_id or uuid.uuid4().hex
        with self._lock:
            inflight = self._unwritten.get(event_id)
        if inflight is not None:  # a concurrent call with this id, on this worker
            return self._written(inflight)
        if not call.event_id:  # a caller's id is checked by the coordinator, with its claim
            check_pending(self.coordinator_pending + len(self._unwritten), self.config.limits.max_pending_decisions,
                          self.counts)
        event = make_decision(call, event_id, surface, self.catalog, time.time())
        line, ours = event_line(event), True
        if call.event_id:
            known = self._claim(event_id, line)
            if known is not None:
                line, logged = known
                event, ours = event_from_record(json.loads(line)), False
                if logged:
                    return event
                # Claimed by another worker that may still be writing it (or
                # died before it could): written here too, so that what this
                # caller is told is durable; the coordinator joins one copy.
        with self._lock:
            inflight = self._in_hand(event_id)
            if inflight is None:
                ticket = self.events.submit(line)
                self._unwritten[event_id] = (event, ticket)
        if inflight is not None:
            return self._written(inflight)
        try:
            self.events.wait(ticket)
        finally:
            with self._lock:
                written = self._unwritten.pop(event_id)
                if call.event_id and ticket.error is None:
                    self._written_lately.put(event_id, written)
        if ours and wanted is not None and not wanted():  # another's decision may have reached its caller
            self._unserved(event_id)
            raise caller_gone(event_id)
        return event

    def _claim(self, event_id: str, line: str) -> Verdict:
        """The coordinator's verdict on a caller's event id (see :meth:`Engine.claim`)."""
        try:
            return self._claims.claim(event_id, line)
        except Relayed:
            raise  # the coordinator's refusal (ALREADY_EXISTS, RESOURCE_EXHAUSTED), as it gave it
        except grpc.RpcError as err:
            raise coordinator_away(event_id, err) from None

    def _in_hand(self, event_id: str) -> tuple[DecisionEvent, Ticket] | None:
        """This worker's decision for the id: being written, or written lately
        (under the lock; asked only after the coordinator's verdict, which is
        what says whether the id has joined)."""
        return self._unwritten.get(event_id) or self._written_lately.get(event_id)

    def _written(self, inflight: tuple[DecisionEvent, Ticket]) -> DecisionEvent:
        """A decision being written by a concurrent call: once it is in the log
        (LogUnwritable if it never got there)."""
        event, ticket = inflight
        self.events.wait(ticket)
        return event

    def _unserved(self, event_id: str) -> None:
        marker = dumps(event_to_record(UnservedEvent(event_id, time.time())))
        try:
            self.events.wait(self.events.submit(marker))
        except OSError as exc:
            log.error("worker %s: event '%s' could not be marked unserved: %r", self.index, event_id, exc)

    def explain(self, event: DecisionEvent, top: int = 5) -> Explanation:
        return self.explainer.explain(self.surface(event.surface).serving, event, top)

    def reward(self, event_id: str, slot_id: str, value: float, at: float | None = None,
               timeout: float | None = None) -> str:
        """Forwarded to the coordinator, for the caller's time left (``timeout``;
        None: limits.forward_timeout_seconds)."""
        request = pb.RewardRequest(event_id=event_id, slot_id=slot_id, value=value)
        if at is not None:
            request.at.FromNanoseconds(int(at * 1e9))
        return self._forward(self._service.Reward, request, timeout).slot_id

    def activate(self, event_id: str, at: float | None = None, timeout: float | None = None) -> None:
        """As :meth:`reward`."""
        request = pb.ActivateRequest(event_id=event_id)
        if at is not None:
            request.at.FromNanoseconds(int(at * 1e9))
        self._forward(self._service.Activate, request, timeout)

    def _forward(self, method, request, timeout: float | None):
        bound = self.config.limits.forward_timeout_seconds
        try:
            return method(request, timeout=bound if timeout is None else timeout, metadata=self.metadata)
        except grpc.RpcError as err:
            raise relayed(err, timeout is None, bound) from None


def _forward_admin(channel: grpc.Channel, bound: float,
                   metadata: tuple[tuple[str, str], ...] = ()) -> grpc.GenericRpcHandler:
    """PlacementAdmin as raw bytes passed to the coordinator (auth was checked
    here), for the caller's time left, else ``bound`` (limits.forward_timeout_seconds;
    a model's export or import, as long as it takes); a caller that cancels
    or goes away cancels the forwarded call."""
    service = pb.DESCRIPTOR.services_by_name["PlacementAdmin"]
    handlers = {}
    for method in service.methods:
        path = f"/{service.full_name}/{method.name}"
        if method.server_streaming:  # ExportModel
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _forward_stream(channel.unary_stream(path), metadata))
        elif method.client_streaming:  # ImportModel
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(
                _forward_unary(channel.stream_unary(path), metadata))
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _forward_unary(channel.unary_unary(path), metadata, bound))
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _forward_unary(call, metadata: tuple[tuple[str, str], ...], bound: float | None = None):
    def forward(request, context):
        timeout, bounded = forward_timeout(context, bound) if bound is not None else (caller_timeout(context), False)
        future = call.future(request, timeout=timeout, metadata=metadata)
        context.add_callback(future.cancel)
        try:
            return future.result()
        except grpc.RpcError as err:
            failed = relayed(err, bounded, bound)
            context.abort(failed.code(), failed.details())
    return forward


def _forward_stream(call, metadata: tuple[tuple[str, str], ...]):
    def forward(request, context):
        responses = call(request, timeout=caller_timeout(context), metadata=metadata)
        context.add_callback(responses.cancel)
        try:
            yield from responses
        except grpc.RpcError as err:  # the coordinator's status, as it gave it
            context.abort(err.code(), err.details())
    return forward


def _worker_main(config: ServerConfig, index: int, ready: mp.Event) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when workers stop
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s worker-{index} %(levelname)s %(message)s")
    if config.pin_cpus:  # before the gRPC threads start: they inherit it (the coordinator stays free)
        log.info("worker %d pinned to CPU %d", index, affinity.pin_serving_process(index))
    channel = grpc.insecure_channel(f"unix:{socket_path(config.data_dir)}", options=COORDINATOR_CHANNEL)
    engine = WorkerEngine(config, index, channel)
    forward = _forward_admin(channel, config.limits.forward_timeout_seconds)
    running = start_server(config, engine, admin_handler=forward, reuse_port=True)
    ready.set()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    parent = os.getppid()
    while not done.wait(0.5):
        if os.getppid() != parent:  # the coordinator died: never serve without it
            log.error("coordinator is gone; worker %d stops", index)
            break
    running.stop(grace=5.0)
    channel.close()


def run_remote_worker(config: ServerConfig, name: str, coordinator: str,
                      credentials: grpc.ChannelCredentials | None = None, token: str | None = None):
    """A serving worker on any host: shares the data directory (shared storage)
    and reaches the coordinator over the network. Returns the running server."""
    channel = (grpc.secure_channel(coordinator, credentials, options=COORDINATOR_CHANNEL) if credentials
               else grpc.insecure_channel(coordinator, options=COORDINATOR_CHANNEL))
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    engine = WorkerEngine(config, name, channel, metadata=metadata)
    forward = _forward_admin(channel, config.limits.forward_timeout_seconds, metadata)
    return start_server(config, engine, admin_handler=forward, reuse_port=True)


# --- coordinator ----------------------------------------------------------------

class Coordinator:
    """Joins, learns and answers rewards/activations/admin for N workers."""

    def __init__(self, config: ServerConfig, workers: int, listen: str | None = None):
        """``workers`` local serving processes; ``listen``: also take workers of
        other hosts on this address (they share the data directory)."""
        if workers < 2 and not listen:
            raise ValueError("the multi-process mode needs 2 or more workers, or --coordinator-listen for "
                             "workers on other hosts; one process serves with start_server")
        self.config, self.workers, self.listen = config, workers, listen
        self.internal_port: int | None = None
        # Recovers every worker log ever written (a previous run may have had
        # more workers, or one process) and follows them on from where it read.
        self.engine = Engine(config)
        self.engine.follow_workers = True
        self._pending_gauge = SharedCounts(pending_path(config.data_dir), PENDING_GAUGE)
        self.engine.peer_counts = self.worker_counts
        for directory in self.engine.worker_logs.directories():  # counted from zero, as the coordinator's own
            reset_counts(directory / COUNTS_FILE)
        self._stop = threading.Event()
        self._procs: list[mp.Process] = []
        self.port = 0
        self.metrics: Metrics | None = None
        self.metrics_port: int | None = None

    def worker_counts(self) -> list[dict[str, int]]:
        """What every worker (of this host or another) rejected itself."""
        return [read_counts(directory / COUNTS_FILE) for directory in self.engine.worker_logs.directories()]

    def _tail_loop(self) -> None:
        while not self._stop.wait(TAIL_SECONDS):
            try:
                self.engine.catch_up()
                self._pending_gauge["pending"] = self.engine.pending()
                self._pending_gauge.flush()  # for workers of other hosts
            except Exception:
                log.exception("reading worker decisions failed")

    def start(self) -> int:
        """Start the coordinator and the workers; returns the shared port."""
        if self.workers:  # what each worker would refuse, refused here before any is spawned
            admin_auth(self.config.security, self.config.host)
        path = socket_path(self.config.data_dir)
        path.unlink(missing_ok=True)
        sec = self.config.security
        token = read_token(sec.admin_token_file, sec.admin_token_env, dict(os.environ))  # bad: fails before workers
        interceptors = []
        if self.listen:
            interceptors.append(AuthInterceptor(token, sec.admin_identities, protect_all=True, trust_unix_peers=True))
        interceptors.append(MalformedRequestInterceptor())  # admin calls arrive as the client's bytes
        self.internal = grpc.server(futures.ThreadPoolExecutor(max_workers=self.config.threads),
                                    interceptors=interceptors)
        pb_grpc.add_PlacementServiceServicer_to_server(PlacementService(self.engine), self.internal)
        pb_grpc.add_PlacementAdminServicer_to_server(PlacementAdmin(self.engine), self.internal)
        self.internal.add_generic_rpc_handlers((_coordination_handler(self.engine),))
        self.internal.add_insecure_port(f"unix:{path}")
        if self.listen:
            self.internal_port = _listen_for_workers(self.internal, self.config, self.listen)
        self.internal.start()
        os.chmod(path, 0o600)
        self.engine.start()
        threading.Thread(target=self._tail_loop, name="tail", daemon=True).start()
        if self.config.metrics.port is not None:  # the engine's counters, every worker included
            self.metrics = Metrics(self.engine)
            self.metrics_port = self.metrics.serve(self.config.metrics.host, self.config.metrics.port)
        if self.workers == 0:
            log.info("coordinator: waiting for workers of other hosts on %s", self.listen)
            return 0
        self.port, reservation = _reserve_port(self.config.host, self.config.port)
        ctx = mp.get_context("spawn")
        worker_config = replace(self.config, port=self.port, metrics=replace(self.config.metrics, port=None))
        try:
            readiness = []
            for index in range(self.workers):  # started together: each spends its start importing
                ready = ctx.Event()
                proc = ctx.Process(target=_worker_main, args=(worker_config, index, ready), name=f"worker-{index}")
                proc.start()
                self._procs.append(proc)
                readiness.append(ready)
            for index, ready in enumerate(readiness):
                _await_worker(self._procs[index], index, ready)
        finally:
            reservation.close()
        log.info("coordinator: %d workers serving on %s:%d", self.workers, self.config.host, self.port)
        return self.port

    def stop(self) -> None:
        """Workers drain first; then the last decisions are read, joined and learned."""
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self._procs:
            proc.join(timeout=30)
        self._stop.set()
        self.engine.catch_up()
        self.internal.stop(5.0).wait()
        if self.metrics is not None:
            self.metrics.stop()
        self.engine.stop()
        socket_path(self.config.data_dir).unlink(missing_ok=True)


def _coordination_handler(engine: Engine) -> grpc.GenericRpcHandler:
    """The coordinator's answers to its workers (not part of the public API)."""
    service, method = CLAIM.strip("/").split("/")
    handler = grpc.unary_unary_rpc_method_handler(lambda request, _: answer_claims(engine, request))  # bytes
    return grpc.method_handlers_generic_handler(service, {method: handler})


def _listen_for_workers(server: grpc.Server, config: ServerConfig, address: str) -> int:
    """The coordinator's network port for remote workers: TLS if configured, and
    every call needs the admin token (workers are trusted with admin calls)."""
    from server.app import server_credentials, is_loopback

    host = address.rpartition(":")[0]
    token = read_token(config.security.admin_token_file, config.security.admin_token_env, dict(os.environ))
    if not token and not is_loopback(host) and not config.security.allow_unauthenticated_admin:
        raise ValueError(f"refusing to take workers on {address} without an admin token")
    credentials = server_credentials(config.security)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not listen on {address}")
    return port


WORKER_START_SECONDS = 120


def _await_worker(proc: mp.Process, index: int, ready, timeout: float = WORKER_START_SECONDS) -> None:
    """Return once the worker serves; a worker that exits first is reported at
    once (its own log says why), not after the start-up timeout."""
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if not proc.is_alive():
            raise RuntimeError(f"worker {index} exited with code {proc.exitcode} before it served")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker {index} did not start within {timeout:g} s")


def _reserve_port(host: str, port: int) -> tuple[int, socket.socket]:
    """Bind (without listening) with SO_REUSEPORT so the workers can share the
    port, and port 0 resolves to one port for all of them."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    return sock.getsockname()[1], sock
