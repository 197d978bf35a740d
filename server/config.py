"""Server configuration: one TOML file plus command-line overrides.

Every setting has a safe default, so ``placement serve`` runs with none: it
listens on loopback and keeps its log, joined data and models under
``./placement-data``. Unknown keys are an error (a typo should not silently
fall back to a default).

Example::

    host = "127.0.0.1"
    port = 50051
    data_dir = "placement-data"

    [join]
    window_seconds = 3600
    aggregation = "sum"       # sum | earliest | max | mean
    default_reward = 0.0

    [learner]
    publish_every_examples = 1000
    publish_every_seconds = 60
    keep_versions = 20
    max_backlog_bytes = 134217728  # joined decisions waiting to be learned
    sample_rate = 1.0         # share of joined decisions logged and learned

    [log]
    fsync = "batch"           # always | batch | never (see README: durability)

    [surfaces.default]
    mode = "online"           # online | apprentice | logging_only
    [surfaces.default.learning]
    learning_rate = 0.05
    interactions = ["CA", "SA", "CSA"]
    [surfaces.default.learning.exploration]
    algorithm = "squarecb"    # epsilon | softmax | bag | cover | squarecb | regcb | rnd | first
    gamma_scale = 30
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bandit.features import Limits
from bandit.decision import Mode
from bandit.joiner import RewardOutOfRange, check_reward_value
from bandit.vwargs import LearningSettings, SettingsError
from server import affinity

FSYNC_POLICIES = ("always", "batch", "never")


class ConfigError(ValueError):
    """A configuration problem; the message names the setting."""


@dataclass(frozen=True)
class JoinConfig:
    window_seconds: float = 3600.0
    aggregation: str = "sum"
    default_reward: float = 0.0
    tick_seconds: float = 0.2
    # How often the join loop writes DATA/checkpoint.json (what a restart
    # resumes from); it goes on while joins wait for the learner.
    checkpoint_seconds: float = 5.0


@dataclass(frozen=True)
class LearnerConfig:
    publish_every_examples: int = 1000
    publish_every_seconds: float = 60.0
    keep_versions: int = 20
    # Joined decisions waiting for the learner, at most this many bytes (their
    # joined lines, ~15 KB each at 50 candidates x 3 slots) and items. When it
    # is full the join waits (decisions stay pending, their rewards past the
    # window refused as expired) and, once limits.max_pending_decisions are
    # pending, Decide is refused RESOURCE_EXHAUSTED: back-pressure, nothing
    # dropped. The way out is sample_rate.
    max_backlog_bytes: int = 128 * 1024 * 1024
    queue_size: int = 100_000
    # The share of joined decisions written to the joined log and learned,
    # in (0, 1]; each kept line records pdrop = 1 - sample_rate, so VW (and
    # the off-policy estimators) weight it by 1 / sample_rate. Drawn from a
    # hash of sample_seed and the event id. Set it to about the learner's
    # events/s over the decisions/s when the learner cannot keep up.
    sample_rate: float = 1.0
    sample_seed: int = 0


@dataclass(frozen=True)
class LogConfig:
    fsync: str = "batch"
    segment_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class SurfaceConfig:
    mode: str = "online"
    learning: LearningSettings = field(default_factory=LearningSettings)


@dataclass(frozen=True)
class RequestLimits:
    max_slots: int = 16
    max_candidates: int = 1000
    # Event ids, surface names and slot ids in Reward (names and ids inside
    # features, slots and collections are bounded by features.max_name_length).
    max_id_length: int = 128
    max_title_length: int = 512  # a collection's title
    max_message_bytes: int = 4 * 1024 * 1024  # one request, all of it
    # Calls in flight beyond this are answered RESOURCE_EXHAUSTED at once.
    max_concurrent_rpcs: int = 256
    # Decisions waiting for their reward window, in memory (each keeps its log
    # line, or where it is, until it joins); beyond it Decide is refused
    # RESOURCE_EXHAUSTED until joins make room.
    max_pending_decisions: int = 200_000
    # A decision finished with less than this left before the caller's
    # deadline is taken as not delivered (logged unserved, never learned): the
    # answer needs time to travel, and the server cannot see it arrive.
    deadline_margin_seconds: float = 0.001
    # With workers: how long a call a worker passes to its coordinator
    # (Reward, Activate, admin calls but model export/import) may take when
    # its caller set no deadline (with one, the caller's time left).
    forward_timeout_seconds: float = 10.0
    # explain=true: feature ablations per request (each one VW predict of a
    # slot), and explanations computed at once per serving process.
    explain_max_features: int = 48
    explain_max_concurrent: int = 2
    # Streaming calls (DecideStream above all) open at once per serving
    # process, each on a handler thread of its own on top of `threads`; beyond
    # it RESOURCE_EXHAUSTED at once. A stream whose client sends no request for
    # stream_idle_seconds is ended (DEADLINE_EXCEEDED naming the setting).
    max_streams: int = 8
    stream_idle_seconds: float = 60.0
    features: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class SecurityConfig:
    """Transport security and who may call what. Secrets are read from files or
    the environment, never from this file, and are never logged."""

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # With a client CA, clients must present a certificate it signed (mTLS).
    tls_client_ca_file: Path | None = None
    # Admin token: read from this file, else from $PLACEMENT_ADMIN_TOKEN.
    admin_token_file: Path | None = None
    admin_token_env: str = "PLACEMENT_ADMIN_TOKEN"
    # mTLS identities (certificate common names) allowed to call PlacementAdmin.
    admin_identities: tuple[str, ...] = ()
    # Require the token (or an allowed identity) for PlacementService too.
    protect_all: bool = False
    # Listening beyond loopback with an unauthenticated admin service is refused
    # unless this is set.
    allow_unauthenticated_admin: bool = False

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


@dataclass(frozen=True)
class MetricsConfig:
    # Prometheus metrics over HTTP on this port (0: the OS chooses); None: off.
    port: int | None = None
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: Path = Path("placement-data")
    threads: int = 16
    # Each serving process pinned to one allowed CPU (server.affinity; Linux).
    pin_cpus: bool = False
    join: JoinConfig = field(default_factory=JoinConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    limits: RequestLimits = field(default_factory=RequestLimits)
    surfaces: Mapping[str, SurfaceConfig] = field(default_factory=lambda: {"default": SurfaceConfig()})
    security: SecurityConfig = field(default_factory=SecurityConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def validate(self) -> "ServerConfig":
        if not (0 <= self.port <= 65535):
            raise ConfigError(f"port {self.port} is not in 0..65535")
        if self.join.window_seconds <= 0 or self.join.checkpoint_seconds <= 0:
            raise ConfigError("join.window_seconds and join.checkpoint_seconds must be positive")
        if self.join.aggregation not in ("sum", "earliest", "max", "mean"):
            raise ConfigError(f"join.aggregation '{self.join.aggregation}' is not sum, earliest, max or mean")
        try:
            check_reward_value(self.join.default_reward)
        except RewardOutOfRange as exc:
            raise ConfigError(f"join.default_reward: {exc}") from None
        if self.log.fsync not in FSYNC_POLICIES:
            raise ConfigError(f"log.fsync '{self.log.fsync}' is not one of {', '.join(FSYNC_POLICIES)}")
        if self.learner.publish_every_examples < 1 or self.learner.publish_every_seconds <= 0:
            raise ConfigError("learner.publish_every_examples and publish_every_seconds must be positive")
        if self.learner.max_backlog_bytes < 1 or self.learner.queue_size < 1:
            raise ConfigError("learner.max_backlog_bytes and learner.queue_size must be positive")
        if not 0.0 < self.learner.sample_rate <= 1.0:
            raise ConfigError(f"learner.sample_rate {self.learner.sample_rate!r} is not in (0, 1]")
        if self.threads < 1 or self.limits.max_streams < 1 or self.limits.stream_idle_seconds <= 0:
            raise ConfigError("threads, limits.max_streams and limits.stream_idle_seconds must be positive")
        if not isinstance(self.pin_cpus, bool):
            raise ConfigError(f"pin_cpus {self.pin_cpus!r} is not true or false")
        if self.pin_cpus and not affinity.supported():
            raise ConfigError("pin_cpus needs Linux (sched_setaffinity); this system has none")
        if self.learner.keep_versions < 2:
            raise ConfigError("learner.keep_versions must be at least 2 (rollback needs a previous version)")
        limits = self.limits
        if not 0 <= limits.deadline_margin_seconds < 60:
            raise ConfigError("limits.deadline_margin_seconds must be in [0, 60)")
        if not 0 < limits.forward_timeout_seconds <= 3600:
            raise ConfigError("limits.forward_timeout_seconds must be in (0, 3600]")
        if limits.max_pending_decisions < 1 or limits.explain_max_concurrent < 0 or limits.explain_max_features < 0:
            raise ConfigError("limits.max_pending_decisions must be positive, limits.explain_max_features and "
                              "explain_max_concurrent not negative")
        if "default" not in self.surfaces:
            raise ConfigError("surfaces must include 'default'")
        for name, surface in self.surfaces.items():
            if surface.mode not in {m.value for m in Mode}:
                raise ConfigError(f"surfaces.{name}.mode '{surface.mode}' is not online, apprentice or logging_only")
        sec = self.security
        if (sec.tls_cert_file is None) != (sec.tls_key_file is None):
            raise ConfigError("security.tls_cert_file and security.tls_key_file go together")
        if sec.tls_client_ca_file is not None and not sec.tls:
            raise ConfigError("security.tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        if sec.admin_identities and sec.tls_client_ca_file is None:
            raise ConfigError("security.admin_identities needs mutual TLS (security.tls_client_ca_file)")
        for path in (sec.tls_cert_file, sec.tls_key_file, sec.tls_client_ca_file, sec.admin_token_file):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"security: file {path} does not exist")
        return self


def _build(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{where}]: {', '.join(sorted(unknown))}")
    return cls(**raw)


def load_config(path: Path | None = None, **overrides: Any) -> ServerConfig:
    """Read the TOML file (if any), then apply non-None overrides (CLI flags)."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return _from_dict(raw).validate()
    except (TypeError, SettingsError) as exc:
        raise ConfigError(str(exc)) from None


def _from_dict(raw: dict[str, Any]) -> ServerConfig:
    raw = dict(raw)
    nested = {
        "join": _build(JoinConfig, raw.pop("join", {}), "join"),
        "learner": _build(LearnerConfig, raw.pop("learner", {}), "learner"),
        "log": _build(LogConfig, raw.pop("log", {}), "log"),
    }
    limits_raw = dict(raw.pop("limits", {}))
    feature_limits = _build(Limits, limits_raw.pop("features", {}), "limits.features")
    nested["limits"] = _build(RequestLimits, {**limits_raw, "features": feature_limits}, "limits")
    surfaces = {}
    for name, sraw in (raw.pop("surfaces", None) or {"default": {}}).items():
        sraw = dict(sraw)
        learning = LearningSettings.from_dict(sraw.pop("learning", {}))
        surfaces[name] = _build(SurfaceConfig, {**sraw, "learning": learning}, f"surfaces.{name}")
    surfaces.setdefault("default", SurfaceConfig())
    if "data_dir" in raw:
        raw["data_dir"] = Path(raw["data_dir"])
    sec = dict(raw.pop("security", {}))
    for key in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "admin_token_file"):
        if sec.get(key) is not None:
            sec[key] = Path(sec[key])
    if "admin_identities" in sec:
        sec["admin_identities"] = tuple(sec["admin_identities"])
    nested["security"] = _build(SecurityConfig, sec, "security")
    nested["metrics"] = _build(MetricsConfig, raw.pop("metrics", {}), "metrics")
    return _build(ServerConfig, {**raw, **nested, "surfaces": surfaces}, "top level")
