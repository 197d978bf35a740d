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


def test_identity_lru_answers_only_for_the_object_itself():
    """Equal content is not the same object (a request's fresh list must not
    get another list's answer), and an entry keeps its object alive, so its id
    is never another's while it is cached."""
    import gc
    import weakref

    from bandit.lru import IdentityLRU

    class Item:
        pass

    cache: IdentityLRU[str] = IdentityLRU(2)
    a, b = ("x", "y"), tuple(["x", "y"])
    assert a == b and a is not b
    cache.put(a, "for a")
    assert cache.get(a) == "for a" and cache.get(b) is None
    held = Item()
    alive = weakref.ref(held)
    cache.put(held, "held")
    del held
    gc.collect()
    assert alive() is not None and cache.get(alive()) == "held"
    cache.put(b, "for b")  # evicts a; then 'held' goes too
    cache.put(("z",), "z")
    gc.collect()
    assert alive() is None and cache.get(b) == "for b" and len(cache) == 2
