"""The bounded cache behind the decide path's caches."""

from __future__ import annotations

import pytest

from bandit.lru import LRU


def test_least_recently_used_is_dropped_at_capacity():
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2
    cache.put("a", 4)  # replacing keeps one entry
    assert cache.get("a") == 4 and len(cache) == 2


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        LRU(0)
