import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_ONLINE: _ClassVar[Mode]
    MODE_APPRENTICE: _ClassVar[Mode]
    MODE_LOGGING_ONLY: _ClassVar[Mode]
MODE_UNSPECIFIED: Mode
MODE_ONLINE: Mode
MODE_APPRENTICE: Mode
MODE_LOGGING_ONLY: Mode

class Feature(_message.Message):
    __slots__ = ("name", "number", "category")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    name: str
    number: float
    category: str
    def __init__(self, name: _Optional[str] = ..., number: _Optional[float] = ..., category: _Optional[str] = ...) -> None: ...

class FeatureGroup(_message.Message):
    __slots__ = ("name", "features")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    name: str
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    def __init__(self, name: _Optional[str] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ...) -> None: ...

class Collection(_message.Message):
    __slots__ = ("id", "groups", "title", "eligible_slots", "active_from", "active_until")
    ID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FROM_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_UNTIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    groups: _containers.RepeatedCompositeFieldContainer[FeatureGroup]
    title: str
    eligible_slots: _containers.RepeatedScalarFieldContainer[str]
    active_from: _timestamp_pb2.Timestamp
    active_until: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[FeatureGroup, _Mapping]]] = ..., title: _Optional[str] = ..., eligible_slots: _Optional[_Iterable[str]] = ..., active_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., active_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Slot(_message.Message):
    __slots__ = ("id", "groups", "default_collection")
    ID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    groups: _containers.RepeatedCompositeFieldContainer[FeatureGroup]
    default_collection: str
    def __init__(self, id: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[FeatureGroup, _Mapping]]] = ..., default_collection: _Optional[str] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("event_id", "surface", "context", "slots", "candidates", "mode", "deferred_activation", "explain", "at", "max_ranking")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    MAX_RANKING_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    surface: str
    context: _containers.RepeatedCompositeFieldContainer[FeatureGroup]
    slots: _containers.RepeatedCompositeFieldContainer[Slot]
    candidates: _containers.RepeatedCompositeFieldContainer[Collection]
    mode: Mode
    deferred_activation: bool
    explain: bool
    at: _timestamp_pb2.Timestamp
    max_ranking: int
    def __init__(self, event_id: _Optional[str] = ..., surface: _Optional[str] = ..., context: _Optional[_Iterable[_Union[FeatureGroup, _Mapping]]] = ..., slots: _Optional[_Iterable[_Union[Slot, _Mapping]]] = ..., candidates: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ..., mode: _Optional[_Union[Mode, str]] = ..., deferred_activation: _Optional[bool] = ..., explain: _Optional[bool] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_ranking: _Optional[int] = ...) -> None: ...

class RankedCollection(_message.Message):
    __slots__ = ("collection_id", "probability")
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    collection_id: str
    probability: float
    def __init__(self, collection_id: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class FeatureContribution(_message.Message):
    __slots__ = ("group", "feature", "contribution")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    group: str
    feature: str
    contribution: float
    def __init__(self, group: _Optional[str] = ..., feature: _Optional[str] = ..., contribution: _Optional[float] = ...) -> None: ...

class SlotDecision(_message.Message):
    __slots__ = ("slot_id", "collection_id", "probability", "ranking", "explanation")
    SLOT_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    slot_id: str
    collection_id: str
    probability: float
    ranking: _containers.RepeatedCompositeFieldContainer[RankedCollection]
    explanation: _containers.RepeatedCompositeFieldContainer[FeatureContribution]
    def __init__(self, slot_id: _Optional[str] = ..., collection_id: _Optional[str] = ..., probability: _Optional[float] = ..., ranking: _Optional[_Iterable[_Union[RankedCollection, _Mapping]]] = ..., explanation: _Optional[_Iterable[_Union[FeatureContribution, _Mapping]]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("event_id", "model_version", "slots", "mode", "surface", "model_version_number", "explanation_truncated", "error")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    model_version: str
    slots: _containers.RepeatedCompositeFieldContainer[SlotDecision]
    mode: Mode
    surface: str
    model_version_number: int
    explanation_truncated: bool
    error: ItemError
    def __init__(self, event_id: _Optional[str] = ..., model_version: _Optional[str] = ..., slots: _Optional[_Iterable[_Union[SlotDecision, _Mapping]]] = ..., mode: _Optional[_Union[Mode, str]] = ..., surface: _Optional[str] = ..., model_version_number: _Optional[int] = ..., explanation_truncated: _Optional[bool] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class RewardRequest(_message.Message):
    __slots__ = ("event_id", "slot_id", "value", "at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    slot_id: str
    value: float
    at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., slot_id: _Optional[str] = ..., value: _Optional[float] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RewardResponse(_message.Message):
    __slots__ = ("event_id", "slot_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    slot_id: str
    def __init__(self, event_id: _Optional[str] = ..., slot_id: _Optional[str] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("event_id", "at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ActivateResponse(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class PutCollectionsRequest(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ...) -> None: ...

class PutCollectionsResponse(_message.Message):
    __slots__ = ("catalog_version", "stored")
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    catalog_version: int
    stored: int
    def __init__(self, catalog_version: _Optional[int] = ..., stored: _Optional[int] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "catalog_version")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    catalog_version: int
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ..., catalog_version: _Optional[int] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ("catalog_version",)
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    catalog_version: int
    def __init__(self, catalog_version: _Optional[int] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("surface",)
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    surface: str
    def __init__(self, surface: _Optional[str] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("version", "sha256", "examples_learned", "created", "origin")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_LEARNED_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    version: int
    sha256: str
    examples_learned: int
    created: _timestamp_pb2.Timestamp
    origin: str
    def __init__(self, version: _Optional[int] = ..., sha256: _Optional[str] = ..., examples_learned: _Optional[int] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., origin: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("surface", "current_version", "vw_arguments", "versions", "current_version_number")
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VW_ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    surface: str
    current_version: str
    vw_arguments: str
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    current_version_number: int
    def __init__(self, surface: _Optional[str] = ..., current_version: _Optional[str] = ..., vw_arguments: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., current_version_number: _Optional[int] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("surface", "sha256", "vw_arguments", "version", "data")
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    VW_ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    surface: str
    sha256: str
    vw_arguments: str
    version: int
    data: bytes
    def __init__(self, surface: _Optional[str] = ..., sha256: _Optional[str] = ..., vw_arguments: _Optional[str] = ..., version: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("surface", "version")
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    surface: str
    version: int
    def __init__(self, surface: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SurfaceStats(_message.Message):
    __slots__ = ("surface", "model_version", "decisions", "examples_learned", "apprentice_decisions", "apprentice_agreements", "learner_lag_seconds", "model_version_number")
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_LEARNED_FIELD_NUMBER: _ClassVar[int]
    APPRENTICE_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    APPRENTICE_AGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    LEARNER_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    surface: str
    model_version: str
    decisions: int
    examples_learned: int
    apprentice_decisions: int
    apprentice_agreements: int
    learner_lag_seconds: float
    model_version_number: int
    def __init__(self, surface: _Optional[str] = ..., model_version: _Optional[str] = ..., decisions: _Optional[int] = ..., examples_learned: _Optional[int] = ..., apprentice_decisions: _Optional[int] = ..., apprentice_agreements: _Optional[int] = ..., learner_lag_seconds: _Optional[float] = ..., model_version_number: _Optional[int] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("decisions", "rewards", "activations", "joined", "joined_with_reward", "default_reward_applied", "unactivated_dropped", "rewards_rejected_unknown", "rewards_rejected_expired", "pending", "bad_requests", "surfaces", "catalog_version", "learner_errors", "unserved_dropped", "pending_refused", "explain_ablations", "explains_truncated", "learn_backlog_items", "learn_backlog_bytes", "learn_backlog_limit_bytes", "learn_subsampled", "learner_events_per_second")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    JOINED_WITH_REWARD_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_REWARD_APPLIED_FIELD_NUMBER: _ClassVar[int]
    UNACTIVATED_DROPPED_FIELD_NUMBER: _ClassVar[int]
    REWARDS_REJECTED_UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    REWARDS_REJECTED_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    BAD_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SURFACES_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ERRORS_FIELD_NUMBER: _ClassVar[int]
    UNSERVED_DROPPED_FIELD_NUMBER: _ClassVar[int]
    PENDING_REFUSED_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_ABLATIONS_FIELD_NUMBER: _ClassVar[int]
    EXPLAINS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    LEARN_BACKLOG_ITEMS_FIELD_NUMBER: _ClassVar[int]
    LEARN_BACKLOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    LEARN_BACKLOG_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    LEARN_SUBSAMPLED_FIELD_NUMBER: _ClassVar[int]
    LEARNER_EVENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    decisions: int
    rewards: int
    activations: int
    joined: int
    joined_with_reward: int
    default_reward_applied: int
    unactivated_dropped: int
    rewards_rejected_unknown: int
    rewards_rejected_expired: int
    pending: int
    bad_requests: int
    surfaces: _containers.RepeatedCompositeFieldContainer[SurfaceStats]
    catalog_version: int
    learner_errors: int
    unserved_dropped: int
    pending_refused: int
    explain_ablations: int
    explains_truncated: int
    learn_backlog_items: int
    learn_backlog_bytes: int
    learn_backlog_limit_bytes: int
    learn_subsampled: int
    learner_events_per_second: float
    def __init__(self, decisions: _Optional[int] = ..., rewards: _Optional[int] = ..., activations: _Optional[int] = ..., joined: _Optional[int] = ..., joined_with_reward: _Optional[int] = ..., default_reward_applied: _Optional[int] = ..., unactivated_dropped: _Optional[int] = ..., rewards_rejected_unknown: _Optional[int] = ..., rewards_rejected_expired: _Optional[int] = ..., pending: _Optional[int] = ..., bad_requests: _Optional[int] = ..., surfaces: _Optional[_Iterable[_Union[SurfaceStats, _Mapping]]] = ..., catalog_version: _Optional[int] = ..., learner_errors: _Optional[int] = ..., unserved_dropped: _Optional[int] = ..., pending_refused: _Optional[int] = ..., explain_ablations: _Optional[int] = ..., explains_truncated: _Optional[int] = ..., learn_backlog_items: _Optional[int] = ..., learn_backlog_bytes: _Optional[int] = ..., learn_backlog_limit_bytes: _Optional[int] = ..., learn_subsampled: _Optional[int] = ..., learner_events_per_second: _Optional[float] = ...) -> None: ...
