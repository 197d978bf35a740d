"""A small typed client for both services, used by the demo, the simulator's
gRPC path and the tests. Features are plain dicts: ``{"user": {"segment":
"student", "age": 0.3}}``; strings are categorical, numbers numeric."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from placement.v1 import placement_pb2 as pb
from placement.v1 import placement_pb2_grpc as pb_grpc

Features = Mapping[str, Mapping[str, float | str]]

MODES = {"online": pb.MODE_ONLINE, "apprentice": pb.MODE_APPRENTICE, "logging_only": pb.MODE_LOGGING_ONLY,
         None: pb.MODE_UNSPECIFIED}


def tls_credentials(ca_file: Path | None = None, cert_file: Path | None = None,
                    key_file: Path | None = None) -> grpc.ChannelCredentials:
    """Client TLS: trust ``ca_file`` (else the system's roots); with a
    certificate and its key, present them (mutual TLS)."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    for path in (ca_file, cert_file, key_file):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"TLS file '{path}' does not exist")

    def read(path: Path | None) -> bytes | None:
        return Path(path).read_bytes() if path is not None else None

    return grpc.ssl_channel_credentials(read(ca_file), read(key_file), read(cert_file))


@dataclass(frozen=True)
class SlotResult:
    slot_id: str
    collection_id: str
    probability: float
    ranking: tuple[tuple[str, float], ...]
    explanation: tuple[tuple[str, str, float], ...] = ()


@dataclass(frozen=True)
class ItemError:
    """Why one request of a stream was not decided: the status Decide would
    have answered and its message."""

    code: grpc.StatusCode
    message: str


@dataclass(frozen=True)
class DecideResult:
    """A decision; from ``decide_stream`` it may instead carry ``error`` (then
    ``slots`` is empty and ``event_id`` is the request's own)."""

    event_id: str
    model_version: str
    mode: str
    slots: tuple[SlotResult, ...]
    error: ItemError | None = None

    def chosen(self) -> dict[str, str]:
        return {s.slot_id: s.collection_id for s in self.slots}


def feature_groups(features: Features | None) -> list[pb.FeatureGroup]:
    groups = []
    for name, feats in (features or {}).items():
        items = [pb.Feature(name=k, category=v) if isinstance(v, str) else pb.Feature(name=k, number=float(v))
                 for k, v in feats.items()]
        groups.append(pb.FeatureGroup(name=name, features=items))
    return groups


def collection(id: str, features: Features | None = None, *, title: str = "", eligible_slots: Sequence[str] = (),
               active_from: datetime | float | None = None, active_until: datetime | float | None = None) -> pb.Collection:
    msg = pb.Collection(id=id, groups=feature_groups(features), title=title, eligible_slots=list(eligible_slots))
    if active_from is not None:
        msg.active_from.CopyFrom(_stamp(active_from))
    if active_until is not None:
        msg.active_until.CopyFrom(_stamp(active_until))
    return msg


def slot(id: str, features: Features | None = None, default_collection: str = "") -> pb.Slot:
    return pb.Slot(id=id, groups=feature_groups(features), default_collection=default_collection)


def decide_request(context: Features | None, slots: Sequence[pb.Slot | str], candidates: Sequence[pb.Collection | str] = (),
                   *, event_id: str = "", surface: str = "", mode: str | None = None, deferred: bool = False,
                   explain: bool = False, at: datetime | float | None = None,
                   max_ranking: int = 0) -> pb.DecideRequest:
    req = pb.DecideRequest(
        event_id=event_id, surface=surface, context=feature_groups(context),
        slots=[s if isinstance(s, pb.Slot) else slot(s) for s in slots],
        candidates=[c if isinstance(c, pb.Collection) else pb.Collection(id=c) for c in candidates],
        mode=MODES[mode], deferred_activation=deferred, explain=explain, max_ranking=max_ranking)
    if at is not None:
        req.at.CopyFrom(_stamp(at))
    return req


def _stamp(value: datetime | float) -> Timestamp:
    ts = Timestamp()
    if isinstance(value, datetime):
        ts.FromDatetime(value)
    else:
        ts.FromNanoseconds(int(value * 1e9))
    return ts


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def to_result(resp: pb.DecideResponse) -> DecideResult:
    if resp.HasField("error"):
        code = _CODES.get(resp.error.code, grpc.StatusCode.UNKNOWN)
        return DecideResult(resp.event_id, "", "", (), ItemError(code, resp.error.message))
    mode = {v: k for k, v in MODES.items()}[resp.mode] or "online"
    return DecideResult(resp.event_id, resp.model_version, mode, tuple(
        SlotResult(s.slot_id, s.collection_id, s.probability,
                   tuple((r.collection_id, r.probability) for r in s.ranking),
                   tuple((e.group, e.feature, e.contribution) for e in s.explanation))
        for s in resp.slots))


class PlacementClient:
    """Both services over one channel. Use as a context manager."""

    def __init__(self, target: str, *, timeout: float = 10.0, channel: grpc.Channel | None = None,
                 metadata: Sequence[tuple[str, str]] = (), credentials: grpc.ChannelCredentials | None = None,
                 token: str | None = None):
        if channel is None:
            channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        self.channel = channel
        if token:
            metadata = (*metadata, ("authorization", f"Bearer {token}"))
        self.service = pb_grpc.PlacementServiceStub(self.channel)
        self.admin = pb_grpc.PlacementAdminStub(self.channel)
        self.timeout = timeout
        self.metadata = tuple(metadata)

    def __enter__(self) -> "PlacementClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request):
        return method(request, timeout=self.timeout, metadata=self.metadata)

    def decide(self, context: Features | None, slots: Sequence[pb.Slot | str],
               candidates: Sequence[pb.Collection | str] = (), **kwargs) -> DecideResult:
        return to_result(self._call(self.service.Decide, decide_request(context, slots, candidates, **kwargs)))

    def decide_stream(self, requests: Iterable[pb.DecideRequest], timeout: float | None = None) -> Iterator[DecideResult]:
        """Bulk decisions over one stream: one result per request, in request
        order; a refused request gives a result with ``error`` set and the
        rest go on. ``requests`` is read lazily (a generator of 100k is fine).
        No deadline by default (a campaign takes as long as it takes); the
        stream itself fails with grpc.RpcError only when it cannot go on
        (RESOURCE_EXHAUSTED: too many open streams; DEADLINE_EXCEEDED: idle
        longer than the server's limits.stream_idle_seconds)."""
        for resp in self.service.DecideStream(iter(requests), timeout=timeout, metadata=self.metadata):
            yield to_result(resp)

    def reward(self, event_id: str, value: float, slot_id: str = "", at: datetime | float | None = None) -> str:
        req = pb.RewardRequest(event_id=event_id, slot_id=slot_id, value=value)
        if at is not None:
            req.at.CopyFrom(_stamp(at))
        return self._call(self.service.Reward, req).slot_id

    def activate(self, event_id: str, at: datetime | float | None = None) -> None:
        req = pb.ActivateRequest(event_id=event_id)
        if at is not None:
            req.at.CopyFrom(_stamp(at))
        self._call(self.service.Activate, req)

    # --- admin ------------------------------------------------------------------

    def put_collections(self, collections: Sequence[pb.Collection]) -> int:
        return self._call(self.admin.PutCollections, pb.PutCollectionsRequest(collections=collections)).catalog_version

    def list_collections(self) -> list[pb.Collection]:
        return list(self._call(self.admin.ListCollections, pb.ListCollectionsRequest()).collections)

    def delete_collection(self, collection_id: str) -> int:
        return self._call(self.admin.DeleteCollection, pb.DeleteCollectionRequest(id=collection_id)).catalog_version

    def model_info(self, surface: str = "") -> pb.ModelInfo:
        return self._call(self.admin.GetModelInfo, pb.ModelRequest(surface=surface))

    def export_model(self, path: Path, surface: str = "") -> pb.ModelChunk:
        """Write the current model to ``path``; returns the header (version, sha256)."""
        header = None
        with open(path, "wb") as fh:
            for chunk in self.admin.ExportModel(pb.ModelRequest(surface=surface), timeout=self.timeout,
                                                metadata=self.metadata):
                header = header or chunk
                fh.write(chunk.data)
        return header

    def import_model(self, path: Path, surface: str = "", sha256: str | None = None) -> pb.ModelInfo:
        data = Path(path).read_bytes()
        digest = sha256 or hashlib.sha256(data).hexdigest()
        chunks = [pb.ModelChunk(surface=surface, sha256=digest, data=data[i:i + (1 << 20)])
                  for i in range(0, max(len(data), 1), 1 << 20)]
        return self.admin.ImportModel(iter(chunks), timeout=self.timeout, metadata=self.metadata)

    def rollback(self, version: int, surface: str = "") -> pb.ModelInfo:
        return self._call(self.admin.RollbackModel, pb.RollbackRequest(surface=surface, version=version))

    def stats(self) -> pb.Stats:
        return self._call(self.admin.GetStats, pb.StatsRequest())
