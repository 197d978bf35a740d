"""gRPC servicers: translate the wire contract to the engine and engine errors
to precise gRPC status codes. No learning or I/O decisions live here."""

from __future__ import annotations

import functools
import logging
import math
import tempfile
from pathlib import Path
from typing import Callable, Iterator, MutableMapping

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bandit.catalog import Catalog, Collection
from bandit.logformat.events import DecisionEvent
from bandit.features import FeatureError, FeatureGroup, SlotSpec, check_groups, check_name
from bandit.joiner import (ExpiredEvent, InvalidTime, JoinError, RewardOutOfRange, UnknownEvent, UnknownSlot,
                           check_reward_value)
from bandit.lru import LRU
from bandit.decision import Mode, NoEligibleCandidate
from bandit.vwargs import SettingsError
from placement.v1 import placement_pb2 as pb
from placement.v1 import placement_pb2_grpc as pb_grpc
from server.engine import AlreadyJoined, CallerGone, DecideCall, Engine, PendingFull, UnknownSurface
from server.eventlog import LogBacklogFull, LogUnwritable
from server.interceptors import MalformedMessage, malformed_message
from server.protocol import ServingEngine
from server.stats import Stats, SurfaceStats
from server.modelstore import ModelStoreError, VersionInfo

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
MAX_MODEL_BYTES = 512 << 20

_MODES = {pb.MODE_ONLINE: Mode.ONLINE, pb.MODE_APPRENTICE: Mode.APPRENTICE,
          pb.MODE_LOGGING_ONLY: Mode.LOGGING_ONLY}
_MODE_TO_PB = {mode: value for value, mode in _MODES.items()}


class InvalidRequest(ValueError):
    pass


class NotFound(LookupError):
    pass


# Most specific first: the first matching class decides the status.
_STATUS: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (AlreadyJoined, grpc.StatusCode.ALREADY_EXISTS),
    (CallerGone, grpc.StatusCode.DEADLINE_EXCEEDED),
    (PendingFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ExpiredEvent, grpc.StatusCode.FAILED_PRECONDITION),
    (UnknownEvent, grpc.StatusCode.NOT_FOUND),
    (UnknownSlot, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidTime, grpc.StatusCode.INVALID_ARGUMENT),
    (RewardOutOfRange, grpc.StatusCode.INVALID_ARGUMENT),
    (JoinError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnknownSurface, grpc.StatusCode.NOT_FOUND),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (NoEligibleCandidate, grpc.StatusCode.FAILED_PRECONDITION),
    (ModelStoreError, grpc.StatusCode.INVALID_ARGUMENT),
    (FeatureError, grpc.StatusCode.INVALID_ARGUMENT),
    (SettingsError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (LogBacklogFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (LogUnwritable, grpc.StatusCode.UNAVAILABLE),
]


def _status_for(exc: BaseException) -> grpc.StatusCode | None:
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code
    return None


def failure(exc: Exception, counts: MutableMapping[str, int], where: str) -> tuple[grpc.StatusCode, str]:
    """The status and message a failed request answers. Counted as a bad
    request, except a coordinator's verdict a worker passes on (counted where
    it was given); anything unexpected is INTERNAL and logged. Call it from
    the ``except`` block (the log shows the traceback)."""
    if isinstance(exc, grpc.RpcError):
        return exc.code(), exc.details()
    counts["bad_requests"] += 1
    code = _status_for(exc)
    if code is None:
        log.exception("%s failed", where)
        return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
    return code, str(exc)


def rpc(counts: Callable[[], dict[str, int]]):
    """Map engine errors to statuses; anything unexpected is INTERNAL, logged,
    and never takes the server down."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, request, context):
            try:
                return method(self, request, context)
            except Exception as exc:
                if context.code() not in (None, grpc.StatusCode.OK):
                    raise  # already aborted with a precise status (e.g. a malformed stream message)
                context.abort(*failure(exc, counts(self), method.__name__))

        return wrapper

    return decorate


_rpc = rpc(lambda self: self.engine.counts)


NO_DEADLINE_SECONDS = 1e9


def caller_timeout(context: grpc.ServicerContext) -> float | None:
    """The caller's time left, or None when it set no deadline (the default of
    grpcio, grpc-go, grpc-java, grpc-js): what a call made on its behalf (a
    worker's to its coordinator) may take. grpcio reports "no deadline" as
    about 9e18 seconds, which passed on as a timeout overflows and expires at once."""
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < NO_DEADLINE_SECONDS else None


def _seconds(ts: Timestamp, present: bool) -> float | None:
    return ts.seconds + ts.nanos / 1e9 if present else None


def _stamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _groups(groups, where: str, engine: ServingEngine) -> tuple[FeatureGroup, ...]:
    out = []
    for group in groups:
        feats: dict[str, float | str] = {}
        for f in group.features:
            kind = f.WhichOneof("value")
            if kind is None:
                raise InvalidRequest(f"{where} feature '{group.name}.{f.name}' has no value")
            if f.name in feats:
                raise InvalidRequest(f"{where} feature '{group.name}.{f.name}' appears twice")
            feats[f.name] = f.number if kind == "number" else f.category
        out.append(FeatureGroup(group.name, feats))
    return check_groups(out, where, engine.config.limits.features)


def _check_id(kind: str, value: str, engine: ServingEngine) -> str:
    return check_name(kind, value, engine.config.limits.features)


def _bounded(kind: str, value: str, limit: int) -> str:
    """Every string of a request has a bound; the message shows the start of it."""
    if len(value) > limit:
        raise InvalidRequest(f"{kind} {value[:40]!r}... is longer than {limit} characters")
    return value


def _short(kind: str, value: str, engine: ServingEngine) -> str:
    return _bounded(kind, value, engine.config.limits.max_id_length)


def _slot(s: pb.Slot, engine: ServingEngine) -> SlotSpec:
    slot_id = _check_id("slot id", s.id, engine)
    if s.default_collection:
        _check_id(f"slot '{slot_id}' default_collection", s.default_collection, engine)
    return SlotSpec(slot_id, _groups(s.groups, f"slot '{slot_id}'", engine), s.default_collection)


def _title(c: pb.Collection, engine: ServingEngine) -> None:
    _bounded(f"collection '{c.id[:40]}' title", c.title, engine.config.limits.max_title_length)


KnownLists = LRU[tuple, tuple[Collection, ...]]


def to_call(req: pb.DecideRequest, engine: ServingEngine, known: LRU[bytes, Collection],
            lists: KnownLists | None = None) -> DecideCall:
    """``known``: candidates already converted, by their wire bytes (see
    _candidate); ``lists``: whole candidate lists (see _candidates)."""
    limits = engine.config.limits
    _short("event_id", req.event_id, engine)
    _short("surface", req.surface, engine)
    if req.mode not in _MODES and req.mode != pb.MODE_UNSPECIFIED:
        raise InvalidRequest(f"unknown mode {req.mode}")
    if not req.slots:
        raise InvalidRequest("no slots: a decision fills at least one slot")
    if len(req.slots) > limits.max_slots:
        raise InvalidRequest(f"{len(req.slots)} slots, at most {limits.max_slots}")
    if len(req.candidates) > limits.max_candidates:
        raise InvalidRequest(f"{len(req.candidates)} candidates, at most {limits.max_candidates}")
    slots = tuple(_slot(s, engine) for s in req.slots)
    if len({s.id for s in slots}) != len(slots):
        raise InvalidRequest("duplicate slot ids in one request")
    candidates = _candidates(req, engine, known, lists)
    if candidates and len(candidates) < len(slots):
        raise InvalidRequest(f"{len(slots)} slots but only {len(candidates)} candidates")
    return DecideCall(req.event_id, req.surface, _groups(req.context, "context", engine), slots, candidates,
                      _MODES.get(req.mode), req.deferred_activation, _seconds(req.at, req.HasField("at")))


def _candidates(req: pb.DecideRequest, engine: ServingEngine, known: LRU[bytes, Collection],
                lists: KnownLists | None) -> tuple[Collection, ...]:
    """The request's candidates, converted and checked (unique ids).

    Front ends send the same list request after request: a list seen before
    (the same bytes of every candidate, and for one naming catalog
    collections by id, the same catalog and version) is the same answer, so
    it is looked up once instead of converting or finding each candidate (50
    lookups at 50 candidates). Only lists that passed the checks are kept."""
    if not req.candidates:
        return ()
    catalog = engine.catalog
    key = (catalog, catalog.version, tuple(c.SerializeToString() for c in req.candidates))
    found = lists.get(key) if lists is not None else None
    if found is not None:
        return found
    by_id = catalog if any(not c.groups for c in req.candidates) else None
    candidates = tuple(_candidate(c, engine, known, by_id) for c in req.candidates)
    if len({c.id for c in candidates}) != len(candidates):
        raise InvalidRequest("duplicate collection ids among the candidates")
    if lists is not None:
        lists.put(key, candidates)
    return candidates


def _candidate(c: pb.Collection, engine: ServingEngine, known: LRU[bytes, Collection],
               catalog: Catalog | None) -> Collection:
    """A candidate with its features as given (and its eligible slots and
    window, which apply as in the catalog), or by id alone: the catalog's
    collection, with the catalog's eligibility and window.

    Front ends send the same collections with the same features request after
    request: one seen before (same bytes) is not converted or validated again,
    and being the same object, its VW text and parsed example are reused too."""
    if c.groups:
        key = c.SerializeToString()
        item = known.get(key)
        if item is None:
            _check_id("collection id", c.id, engine)
            _title(c, engine)
            item = Collection(c.id, _groups(c.groups, f"collection '{c.id}'", engine), c.title,
                              tuple(c.eligible_slots), _seconds(c.active_from, c.HasField("active_from")),
                              _seconds(c.active_until, c.HasField("active_until")))
            known.put(key, item.validate(engine.config.limits.features))
        return item
    _check_id("collection id", c.id, engine)
    _title(c, engine)
    if c.eligible_slots or c.HasField("active_from") or c.HasField("active_until"):
        raise InvalidRequest(f"collection '{c.id}' has no features, so it is the catalog's collection with the "
                             "catalog's eligible_slots and active window; send its features too to give them here")
    item = catalog.get(c.id) if catalog is not None else None
    if item is None:
        raise NotFound(f"collection '{c.id}' has no features and is not in the catalog")
    return item


def _item_error(event_id: str, code: grpc.StatusCode, message: str) -> pb.DecideResponse:
    return pb.DecideResponse(event_id=event_id, error=pb.ItemError(code=code.value[0], message=message))


def to_response(event: DecisionEvent, max_ranking: int = 0) -> pb.DecideResponse:
    """The answer; each slot's ranking cut to its ``max_ranking`` most probable
    entries (0: all), since building 150 entries at 50x3 costs more than the
    rest of the response (the chosen one's probability is on the slot anyway)."""
    # add() builds in place; message constructors plus list arguments copy every
    # ranking entry (2x slower at 50 candidates x 3 slots).
    ids = [c.id for c in event.inp.candidates]
    depth = max_ranking or None
    response = pb.DecideResponse(event_id=event.event_id, model_version=event.model_version,
                                 model_version_number=int(event.model_version),
                                 mode=_MODE_TO_PB[Mode(event.mode)], surface=event.surface)
    for choice in event.choices:
        slot = response.slots.add(slot_id=choice.slot_id, collection_id=ids[choice.action],
                                  probability=choice.probability)
        add = slot.ranking.add
        for a, p in choice.ranking[:depth]:
            add(collection_id=ids[a], probability=p)
    return response


def _deliverable(context: grpc.ServicerContext, margin: float) -> bool:
    """Whether an answer sent now can still reach the caller: it has not
    cancelled, and more than ``margin`` seconds are left before its deadline
    (the response needs time to travel; the server cannot see its arrival)."""
    if not context.is_active():
        return False
    left = context.time_remaining()
    return left is None or left > margin


class PlacementService(pb_grpc.PlacementServiceServicer):
    def __init__(self, engine: ServingEngine, known_candidates: int = 4096, known_lists: int = 256):
        self.engine = engine
        self.known = LRU[bytes, Collection](known_candidates)
        self.lists = KnownLists(known_lists)  # keys hold each list's bytes: ~8 KB at 50 candidates

    def _decide(self, request: pb.DecideRequest, context: grpc.ServicerContext) -> pb.DecideResponse:
        call = to_call(request, self.engine, self.known, self.lists)
        if not context.is_active():  # cancelled or past its deadline: never log an unseen decision
            context.abort(grpc.StatusCode.CANCELLED, "the caller is gone; decision not made")
        margin = self.engine.config.limits.deadline_margin_seconds
        wanted = functools.partial(_deliverable, context, margin)
        if not wanted():
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"less than {margin:g} s left before the deadline; decision not made")
        event = self.engine.decide(call, wanted)  # never learned as shown if the caller is gone
        response = to_response(event, request.max_ranking)
        if request.explain:
            explanation = self.engine.explain(event)
            for slot, reasons in zip(response.slots, explanation.slots):
                slot.explanation.extend(pb.FeatureContribution(group=g, feature=f, contribution=c)
                                        for g, f, c in reasons)
            response.explanation_truncated = explanation.truncated
            counts = self.engine.counts
            counts["explain_ablations"] += explanation.ablations
            counts["explains_truncated"] += explanation.truncated
        return response

    @_rpc
    def Decide(self, request, context):
        return self._decide(request, context)

    def DecideStream(self, request_iterator, context) -> Iterator[pb.DecideResponse]:
        """One answer per request, in request order (each is decided and
        logged before the next is read). A request Decide would refuse gets
        its status as the answer's ``error`` and the stream goes on, so one
        bad item of a campaign costs only itself."""
        for request in request_iterator:
            if isinstance(request, MalformedMessage):
                self.engine.counts["bad_requests"] += 1
                yield _item_error("", grpc.StatusCode.INVALID_ARGUMENT, malformed_message("DecideRequest"))
                continue
            try:
                response = self._decide(request, context)
            except Exception as exc:
                if not context.is_active() or context.code() not in (None, grpc.StatusCode.OK):
                    raise  # the caller is gone: the stream ends
                response = _item_error(request.event_id, *failure(exc, self.engine.counts, "DecideStream"))
            yield response

    @_rpc
    def Reward(self, request, context):
        if not request.event_id:
            raise InvalidRequest("event_id is required")
        _short("event_id", request.event_id, self.engine)
        _short("slot_id", request.slot_id, self.engine)
        if not math.isfinite(request.value):
            raise InvalidRequest(f"reward value {request.value} is not finite")
        check_reward_value(request.value)
        slot = self.engine.reward(request.event_id, request.slot_id, request.value,
                                  _seconds(request.at, request.HasField("at")), timeout=caller_timeout(context))
        return pb.RewardResponse(event_id=request.event_id, slot_id=slot)

    @_rpc
    def Activate(self, request, context):
        if not request.event_id:
            raise InvalidRequest("event_id is required")
        _short("event_id", request.event_id, self.engine)
        self.engine.activate(request.event_id, _seconds(request.at, request.HasField("at")),
                             timeout=caller_timeout(context))
        return pb.ActivateResponse(event_id=request.event_id)


def collection_to_pb(c: Collection) -> pb.Collection:
    msg = pb.Collection(id=c.id, title=c.title, eligible_slots=list(c.eligible_slots))
    for g in c.groups:
        feats = [pb.Feature(name=n, category=v) if isinstance(v, str) else pb.Feature(name=n, number=v)
                 for n, v in g.features.items()]
        msg.groups.append(pb.FeatureGroup(name=g.name, features=feats))
    if c.active_from is not None:
        msg.active_from.CopyFrom(_stamp(c.active_from))
    if c.active_until is not None:
        msg.active_until.CopyFrom(_stamp(c.active_until))
    return msg


def _version_pb(info: VersionInfo) -> pb.ModelVersion:
    return pb.ModelVersion(version=info.version, sha256=info.sha256, examples_learned=info.examples_learned,
                           created=_stamp(info.created), origin=info.origin)


def stats_from_pb(msg: pb.Stats) -> Stats:
    """A coordinator's answer as the snapshot (a worker's ``stats()``); the
    wire does not carry ``join_failed`` (the coordinator's metrics do)."""
    surfaces = tuple(SurfaceStats(s.surface, s.model_version, s.decisions, s.examples_learned,
                                  s.apprentice_decisions, s.apprentice_agreements, s.learner_lag_seconds)
                     for s in msg.surfaces)
    names = [f for f in Stats.__dataclass_fields__ if f not in ("surfaces", "join_failed")]
    return Stats(**{f: getattr(msg, f) for f in names}, join_failed=0, surfaces=surfaces)


def stats_to_pb(stats: Stats) -> pb.Stats:
    fields = {f: getattr(stats, f) for f in stats.__dataclass_fields__ if f not in ("surfaces", "join_failed")}
    return pb.Stats(**fields, surfaces=[pb.SurfaceStats(**vars(s), model_version_number=int(s.model_version))
                                        for s in stats.surfaces])


class PlacementAdmin(pb_grpc.PlacementAdminServicer):
    def __init__(self, engine: Engine):
        self.engine = engine

    @_rpc
    def PutCollections(self, request, context):
        if not request.collections:
            raise InvalidRequest("no collections given")
        for c in request.collections:  # ids, features and eligible slots: Collection.validate in the catalog
            _title(c, self.engine)
        items = [Collection(c.id, _groups(c.groups, f"collection '{c.id}'", self.engine), c.title,
                            tuple(c.eligible_slots), _seconds(c.active_from, c.HasField("active_from")),
                            _seconds(c.active_until, c.HasField("active_until")))
                 for c in request.collections]
        version = self.engine.catalog.put(items)
        return pb.PutCollectionsResponse(catalog_version=version, stored=len(items))

    @_rpc
    def ListCollections(self, request, context):
        return pb.ListCollectionsResponse(collections=[collection_to_pb(c) for c in self.engine.catalog.list()],
                                          catalog_version=self.engine.catalog.version)

    @_rpc
    def DeleteCollection(self, request, context):
        _short("collection id", request.id, self.engine)
        try:
            version = self.engine.catalog.delete(request.id)
        except KeyError:
            raise NotFound(f"collection '{request.id}' is not in the catalog") from None
        return pb.DeleteCollectionResponse(catalog_version=version)

    def _info(self, surface_name: str) -> pb.ModelInfo:
        surface = self.engine.surface(_short("surface", surface_name, self.engine))
        serving, versions = surface.model_info()
        return pb.ModelInfo(surface=surface.name, current_version=serving.version,
                            current_version_number=int(serving.version), vw_arguments=serving.arguments,
                            versions=[_version_pb(v) for v in versions])

    @_rpc
    def GetModelInfo(self, request, context):
        return self._info(request.surface)

    def ExportModel(self, request, context):
        try:
            surface = self.engine.surface(_short("surface", request.surface, self.engine))
            info = surface.store.info(int(surface.version))
            data = surface.store.path(info.version).read_bytes()
        except (UnknownSurface, ModelStoreError, InvalidRequest) as exc:
            context.abort(_status_for(exc), str(exc))
        for offset in range(0, max(len(data), 1), CHUNK_BYTES):
            first = offset == 0
            yield pb.ModelChunk(surface=surface.name if first else "", sha256=info.sha256 if first else "",
                                vw_arguments=info.arguments if first else "",
                                version=info.version if first else 0, data=data[offset:offset + CHUNK_BYTES])

    @_rpc
    def ImportModel(self, request_iterator, context):
        header, size = None, 0
        with tempfile.NamedTemporaryFile(dir=self.engine.config.data_dir, suffix=".import", delete=False) as tmp:
            path = Path(tmp.name)
            try:
                for chunk in request_iterator:
                    header = header or chunk
                    size += len(chunk.data)
                    if size > MAX_MODEL_BYTES:
                        raise InvalidRequest(f"model larger than {MAX_MODEL_BYTES} bytes")
                    tmp.write(chunk.data)
                tmp.close()
                if header is None or not header.sha256:
                    raise InvalidRequest("the first chunk must carry the model's sha256")
                _short("surface", header.surface, self.engine)
                _short("sha256", header.sha256, self.engine)
                self.engine.import_model(header.surface, path, header.sha256)
            finally:
                path.unlink(missing_ok=True)
        return self._info(header.surface)

    @_rpc
    def RollbackModel(self, request, context):
        _short("surface", request.surface, self.engine)
        self.engine.rollback(request.surface, request.version)
        return self._info(request.surface)

    @_rpc
    def GetStats(self, request, context):
        return stats_to_pb(self.engine.stats())
