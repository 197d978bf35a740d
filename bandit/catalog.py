"""The catalog: collections merchandisers register, where they may appear and
when they are active.

One rule decides what a request may be offered (:func:`candidate_set`): the
collections active at the request's moment, each slot restricted to those
eligible for it, so a collection restricted to email never lands on the
homepage. It holds for the catalog's collections and for the ones a request
brings along alike.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

from bandit.lru import IdentityLRU
from bandit.features import (
    DEFAULT_LIMITS,
    Candidate,
    FeatureError,
    Groups,
    Limits,
    SlotSpec,
    check_groups,
    check_name,
    groups_from_dict,
    groups_to_dict,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collection:
    id: str
    groups: Groups = ()
    title: str = ""
    eligible_slots: tuple[str, ...] = ()
    active_from: float | None = None  # unix seconds, inclusive
    active_until: float | None = None  # unix seconds, exclusive

    def active_at(self, at: float) -> bool:
        return (self.active_from is None or self.active_from <= at) and (
            self.active_until is None or at < self.active_until)

    def eligible_for(self, slot_id: str) -> bool:
        return not self.eligible_slots or slot_id in self.eligible_slots

    @cached_property
    def candidate(self) -> Candidate:
        """Made once per collection object, so its VW text (and the policy's
        parsed example) is reused by every request that offers it."""
        return Candidate(self.id, self.groups)

    @property
    def restricted(self) -> bool:
        """Whether eligibility or a window can keep it out of a decision."""
        return bool(self.eligible_slots) or self.active_from is not None or self.active_until is not None

    def validate(self, limits: Limits = DEFAULT_LIMITS) -> "Collection":
        check_name("collection id", self.id, limits)
        check_groups(self.groups, f"collection '{self.id}'", limits)
        for slot in self.eligible_slots:
            check_name(f"collection '{self.id}' eligible slot", slot, limits)
        if self.active_from is not None and self.active_until is not None and self.active_until <= self.active_from:
            raise FeatureError(f"collection '{self.id}': active_until is not after active_from")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "groups": groups_to_dict(self.groups), "title": self.title,
                "eligible_slots": list(self.eligible_slots),
                "active_from": self.active_from, "active_until": self.active_until}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Collection":
        return cls(raw["id"], groups_from_dict(raw.get("groups")), raw.get("title", ""),
                   tuple(raw.get("eligible_slots", ())), raw.get("active_from"), raw.get("active_until"))


@dataclass(frozen=True)
class CandidateSet:
    """Candidates for one request (the collections' objects, VW text cached)
    and, per slot, the indices it may show (see ``DecisionInput.eligible``)."""

    candidates: tuple[Candidate, ...]
    eligible: tuple[tuple[int, ...] | None, ...]


# Unrestricted sets by their (immutable) collections tuple: the server hands
# the same tuple to every request naming the same list, so the policy and the
# log then see the same candidates tuple too (the event line's encoded list is
# looked up by it).
_UNRESTRICTED: IdentityLRU[CandidateSet] = IdentityLRU(256)


def candidate_set(collections: Sequence[Collection], slot_ids: Sequence[str], at: float) -> CandidateSet:
    """The collections active at ``at``, each slot restricted to the ones
    eligible for it: the one rule, for the catalog and a request's own."""
    hit = _UNRESTRICTED.get(collections)
    if hit is not None:
        return hit
    if not any(c.restricted for c in collections):
        cset = CandidateSet(tuple(c.candidate for c in collections), ())
        if isinstance(collections, tuple):
            _UNRESTRICTED.put(collections, cset)
        return cset
    active = [c for c in collections if c.active_at(at)]
    eligible = []
    for slot_id in slot_ids:
        idx = tuple(i for i, c in enumerate(active) if c.eligible_for(slot_id))
        eligible.append(None if len(idx) == len(active) else idx)
    return CandidateSet(tuple(c.candidate for c in active),
                        tuple(eligible) if any(e is not None for e in eligible) else ())


class Catalog:
    """Thread-safe collection registry, persisted as one JSON file (atomic
    replace). Each collection's :class:`Candidate` is made once per change, so
    its VW text (and the policy's parsed example) is reused by every request."""

    def __init__(self, path: Path | None = None, limits: Limits = DEFAULT_LIMITS):
        self.path = path
        self.limits = limits
        self._lock = threading.Lock()
        self._items: dict[str, Collection] = {}
        # candidates_for's answers by slot ids: (valid from, valid until, answer), for one version
        self._sets: dict[tuple[str, ...], tuple[float, float, CandidateSet]] = {}
        self.version = 0
        if path is not None and path.exists():
            raw = json.loads(path.read_text("utf-8"))
            self.version = int(raw.get("version", 0))
            for item in raw.get("collections", []):
                c = Collection.from_dict(item)
                try:  # a file from before a stricter rule must not reach VW
                    c.validate(limits)
                except FeatureError as exc:
                    log.error("%s: collection %r not loaded: %s", path, c.id, exc)
                    continue
                self._items[c.id] = c

    def put(self, collections: Iterable[Collection]) -> int:
        items = [c.validate(self.limits) for c in collections]
        ids = [c.id for c in items]
        if len(set(ids)) != len(ids):
            raise FeatureError("duplicate collection ids in one request")
        with self._lock:
            for c in items:
                self._items[c.id] = c
            self.version += 1
            self._sets.clear()
            self._save()
            return self.version

    def delete(self, collection_id: str) -> int:
        with self._lock:
            if collection_id not in self._items:
                raise KeyError(collection_id)
            del self._items[collection_id]
            self.version += 1
            self._sets.clear()
            self._save()
            return self.version

    def get(self, collection_id: str) -> Collection | None:
        with self._lock:
            return self._items.get(collection_id)

    def list(self) -> list[Collection]:
        with self._lock:
            return sorted(self._items.values(), key=lambda c: c.id)

    def candidates_for(self, slots: Sequence[SlotSpec], at: float) -> CandidateSet:
        """Active collections, each slot restricted to those eligible for it.

        Kept per slot list until the catalog changes or ``at`` crosses a
        collection's window boundary: in between, the answer cannot change."""
        key = tuple(s.id for s in slots)
        with self._lock:
            kept = self._sets.get(key)
            if kept is not None and kept[0] <= at < kept[1]:
                return kept[2]
            cset = candidate_set(sorted(self._items.values(), key=lambda c: c.id), key, at)
            bounds = [b for c in self._items.values() for b in (c.active_from, c.active_until) if b is not None]
            if len(self._sets) >= 256:  # distinct slot lists are few; bound them anyway
                self._sets.clear()
            self._sets[key] = (max((b for b in bounds if b <= at), default=-math.inf),
                               min((b for b in bounds if b > at), default=math.inf), cset)
            return cset

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        data = {"version": self.version, "collections": [c.to_dict() for c in self._items.values()]}
        # 0600: the catalog is as private as the rest of the data directory.
        with open(tmp, "w", encoding="utf-8", opener=lambda p, f: os.open(p, f, 0o600)) as fh:
            fh.write(json.dumps(data, indent=1))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
