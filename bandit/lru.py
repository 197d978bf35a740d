"""A bounded least-recently-used mapping for caches on the decide path.

Caches there are keyed by content (VW text, wire bytes), so an entry is never
stale, only possibly unused; the bound keeps memory fixed whatever clients send.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``capacity`` entries; a hit makes an entry the most recent. Thread-safe
    for keys whose hash and equality are C code (str, bytes, int)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        # No lock on the hot path: each OrderedDict call is atomic under the GIL
        # (str/bytes/int keys run no Python code), and an entry evicted between
        # the two calls is simply gone.
        value = self._entries.get(key)
        if value is not None:
            try:
                self._entries.move_to_end(key)
            except KeyError:
                pass
        return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class IdentityLRU(Generic[V]):
    """An :class:`LRU` keyed by an object's identity, for values derived from
    objects that are handed out again (the same tuple, the same candidate)
    and are costly to hash by content. Each entry holds its object, so the
    object's id cannot be reused by another while the entry lives."""

    def __init__(self, capacity: int):
        self._lru: LRU[int, tuple[object, V]] = LRU(capacity)

    def get(self, obj: object) -> V | None:
        hit = self._lru.get(id(obj))
        return hit[1] if hit is not None and hit[0] is obj else None

    def put(self, obj: object, value: V) -> None:
        self._lru.put(id(obj), (obj, value))

    def __len__(self) -> int:
        return len(self._lru)
