"""The simulator as a front-end of a live server: the gRPC path.

:class:`GrpcEnginePolicy` is the ``engine`` policy with the learning done by a
running ``placement serve``: it registers the scenario's collections
(PutCollections, with their active windows), sends each simulated request as a
Decide call, and forwards the world's rewards as Reward calls. The simulator
loop (:func:`simulator.runner.run` with ``target=...``) stays the same, so the
in-process and the gRPC path are measured by the same records.

Time. The world runs on a simulated clock; the server joins on its wall clock.
The loop delivers each reward once the simulated clock passes its arrival
time, i.e. after the decisions simulated in between (about
``delay / seconds_per_decision`` of them), in simulated-time order. A reward
later than the scenario's ``reward.window_hours`` (simulated) is dropped by
the loop before it is sent, and one the server receives after its own
``join.window_seconds`` (wall clock) is refused (FAILED_PRECONDITION) and
counted in ``server_expired_rewards`` -- both exactly as late rewards are
dropped in production. Give the server a join window longer than the wall
time the simulation needs to cover one simulated reward window
(``summary["wall_seconds_per_window"]`` reports it), and the server learns
from every reward the in-process loop learns from.

Unpaced, the server learns from a decision a join window (plus a publish)
of *wall* time later, which may be many more decisions than the simulated
window spans in-process. ``pace`` fixes the mapping: one simulated reward
window takes ``pace`` wall seconds (the loop sleeps when ahead), so a server
join window a little above ``pace`` closes each decision about as many
decisions later as the in-process joiner does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bandit.logformat.events import JoinedEvent
from bandit.features import FeatureGroup
from bandit.decision import DecisionInput, SlotChoice
from server.client import PlacementClient, collection, slot, tls_credentials
from simulator.world import DAY, World

CANDIDATE_MODES = ("request", "catalog")


class RemoteError(RuntimeError):
    """The server refused or could not be reached; the message says what to do."""


@dataclass(frozen=True)
class RemoteOptions:
    """How to drive a live server.

    ``candidates``: ``request`` sends every request's collections with their
    time-varying features (the world's full information, as in-process);
    ``catalog`` sends none and lets the server take the catalog's collections
    active at the simulated moment (static features only).
    ``run_id`` prefixes event ids, so one seed can be replayed against the same
    server (which refuses a reused event id)."""

    target: str
    token: str | None = None
    candidates: str = "request"
    surface: str = ""
    run_id: str = ""
    timeout: float = 10.0
    pace: float | None = None  # wall seconds per simulated reward window; None: as fast as the server answers
    ca_cert: Path | None = None  # TLS: trust this CA (setting any of the three turns TLS on)
    client_cert: Path | None = None  # mutual TLS: present this certificate ...
    client_key: Path | None = None  # ... and its key

    @property
    def tls(self) -> bool:
        return any(p is not None for p in (self.ca_cert, self.client_cert, self.client_key))

    def credentials(self) -> grpc.ChannelCredentials | None:
        return tls_credentials(self.ca_cert, self.client_cert, self.client_key) if self.tls else None

    def validate(self) -> "RemoteOptions":
        if self.candidates not in CANDIDATE_MODES:
            raise ValueError(f"candidates '{self.candidates}' is not one of {', '.join(CANDIDATE_MODES)}")
        if not self.target or ":" not in self.target:
            raise ValueError(f"target '{self.target}' is not host:port")
        self.credentials()  # missing files or an unpaired certificate/key fail here, before any run
        if self.pace is not None and self.pace <= 0:
            raise ValueError("pace must be positive (wall seconds per simulated reward window)")
        return self


def _features(groups: tuple[FeatureGroup, ...]) -> dict[str, dict[str, float | str]]:
    return {g.name: dict(g.features) for g in groups}


class GrpcEnginePolicy:
    """The engine behind a live server, seen through its public API only."""

    name = "engine"

    def __init__(self, world: World, options: RemoteOptions):
        self.world = world
        self.options = options.validate()
        self.client = PlacementClient(options.target, timeout=options.timeout, token=options.token,
                                      credentials=options.credentials())
        self.model_version = ""
        self.stats: dict[str, float] = {"server_rewards": 0, "server_expired_rewards": 0,
                                        "model_versions_seen": 0, "rpc_seconds": 0.0}
        self._versions: set[str] = set()
        self._first_ts: float | None = None
        self._wall0 = 0.0
        self._started = time.perf_counter()
        self._call(lambda: self.client.put_collections(self.catalog()), "PutCollections")

    def catalog(self) -> list[Any]:
        """The scenario's collections with static features and active windows
        (the time-varying ``when`` group travels with each request instead)."""
        s = self.world.scenario
        out = []
        for c in s.collections:
            groups = tuple(g for g in self.world.candidate(c, 0.0, None).groups if g.name != "when")
            until = None if c.retired_day is None else s.start_ts + c.retired_day * DAY
            start = s.start_ts + c.added_day * DAY if c.added_day > 0 else None
            out.append(collection(c.id, _features(groups), title=c.title or c.id,
                                  active_from=start, active_until=until))
        return out

    def _call(self, fn, what: str):
        started = time.perf_counter()
        try:
            return fn()
        except grpc.RpcError as exc:
            raise self._explain(exc, what) from None
        finally:
            self.stats["rpc_seconds"] += time.perf_counter() - started

    def _explain(self, exc: grpc.RpcError, what: str) -> RemoteError:
        code, detail = exc.code(), exc.details()
        hint = ""
        if code == grpc.StatusCode.UNAVAILABLE:
            hint = f" (is 'placement serve' running at {self.options.target}?)"
        elif code == grpc.StatusCode.ALREADY_EXISTS:
            hint = " (this seed already ran against this server: pass a new --run-id)"
        elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            hint = " (pass the server's admin token with --token)"
        return RemoteError(f"{what} at {self.options.target} failed: {code.name}: {detail}{hint}")

    def wait_until(self, sim_ts: float) -> None:
        """Pacing: hold simulated time to ``pace`` wall seconds per reward
        window, so the server's wall-clock join window covers the simulated
        one and its learning lag (in decisions) matches the in-process loop's."""
        if self.options.pace is None:
            return
        if self._first_ts is None:
            self._first_ts, self._wall0 = sim_ts, time.perf_counter()
            return
        window = self.world.scenario.reward.window_hours * 3600.0
        ahead = self._wall0 + (sim_ts - self._first_ts) * self.options.pace / window - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)

    def server_event_id(self, event_id: str) -> str:
        return f"{self.options.run_id}-{event_id}" if self.options.run_id else event_id

    def decide(self, inp: DecisionInput, event_id: str) -> list[SlotChoice]:
        request = self.world.current(event_id)
        slots = [slot(s.id, _features(s.groups), s.default_collection) for s in inp.slots]
        candidates = ([collection(c.id, _features(c.groups)) for c in inp.candidates]
                      if self.options.candidates == "request" else [])
        result = self._call(lambda: self.client.decide(
            _features(inp.context), slots, candidates, event_id=self.server_event_id(event_id),
            surface=self.options.surface, at=request.timestamp), "Decide")
        if result.model_version not in self._versions:
            self._versions.add(result.model_version)
            self.stats["model_versions_seen"] = len(self._versions)
        self.model_version = result.model_version
        index = {c.id: a for a, c in enumerate(inp.candidates)}
        choices = []
        for s in result.slots:
            if s.collection_id not in index:
                # With the candidates in the request, only an earlier decision of the same event id
                # (which the server returns as it was) can name another collection.
                why = ("this event id was decided before, with other candidates: this seed already ran "
                       "against this server, pass a new --run-id" if candidates else
                       "the server's catalog differs from the scenario, or this seed already ran against "
                       "this server: pass a new --run-id")
                raise RemoteError(f"server chose '{s.collection_id}' for event '{result.event_id}', not a "
                                  f"candidate of this request ({why})")
            ranking = tuple((index[c], p) for c, p in s.ranking if c in index)
            choices.append(SlotChoice(s.slot_id, index[s.collection_id], s.probability, ranking,
                                      ranking[0][0] if ranking else index[s.collection_id]))
        return choices

    def reward(self, event_id: str, slot_id: str, value: float, timestamp: float) -> None:
        """Forward one reward; one past the server's window is counted and dropped, as in production."""
        started = time.perf_counter()
        try:
            self.client.reward(self.server_event_id(event_id), value, slot_id)
            self.stats["server_rewards"] += 1
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise self._explain(exc, "Reward") from None
            self.stats["server_expired_rewards"] += 1
        finally:
            self.stats["rpc_seconds"] += time.perf_counter() - started

    def learn(self, joined: JoinedEvent) -> None:
        """Nothing: the server joins and learns on its own."""

    def summary(self, decisions: int) -> dict[str, Any]:
        """Wall time per simulated reward window: the server's join window must exceed it."""
        wall = time.perf_counter() - self._started
        window = self.world.scenario.reward.window_hours * 3600.0
        out = dict(self.stats)
        out["target"] = self.options.target
        out["wall_seconds_per_window"] = wall * window / (decisions * self.world.seconds_per_decision)
        return out

    def close(self) -> None:
        self.client.close()
