"""The local pieces without a server: LRU cache, serve-stale, fill guard, backoff."""

import gc
import random

import pytest

from invalidator_client import CacheClient, FillGuard, LocalCache, LRUCache, compile_pattern


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lru_is_bounded_and_evicts_least_recently_used():
    evicted = []
    c = LRUCache(max_entries=3)
    c.on_evict = evicted.append
    for k in "abc":
        c.set(k, k.upper())
    assert c.get("a") == "A"  # a is now the most recent
    c.set("d", "D")
    assert "b" not in c and len(c) == 3
    assert evicted == ["b"]
    assert sorted(c.keys()) == ["a", "c", "d"]
    c.delete("a")  # an explicit delete is not an eviction
    assert evicted == ["b"]
    c.delete_where(compile_pattern("*").matches)
    assert len(c) == 0
    assert isinstance(c, LocalCache)


def test_soft_invalidation_serves_stale_until_max_stale():
    clock = FakeClock()
    evicted = []
    c = LRUCache(max_entries=10, max_stale=5.0, clock=clock)
    c.on_evict = evicted.append
    c.set("k", 1)
    c.set("other", 2)
    c.mark_stale("k")
    e = c.get_entry("k")
    assert e is not None and e.stale and e.value == 1
    clock.t += 4.9
    assert c.get("k") == 1
    c.mark_stale("k")  # a second soft invalidation keeps the first mark
    clock.t += 0.2
    assert c.get("k") is None and "k" not in c
    assert evicted == ["k"]
    assert c.get_entry("other").stale is False
    c.set("k", 3)  # a refill is fresh again
    assert not c.get_entry("k").stale
    c.mark_stale_where(lambda key: key.startswith("o"))
    assert c.is_stale("other") and not c.is_stale("k")


def test_max_stale_zero_never_serves_stale():
    c = LRUCache(max_stale=0)
    c.set("k", 1)
    c.mark_stale("k")
    assert c.get("k") is None


def test_fill_guard_stores_unless_invalidated_meanwhile():
    g = FillGuard()
    stored = []
    t = g.begin("a")
    assert t.valid
    assert g.complete(t, stored.append)
    assert stored == ["a"]
    assert not g.complete(t, stored.append), "a token completes once"

    t = g.begin("a")
    g.void_key("a")
    assert not t.valid
    assert not g.complete(t, lambda k: pytest.fail("stale value stored"))

    t1, t2 = g.begin("user:1"), g.begin("order:1")
    g.void_where(compile_pattern("user:*").matches)
    assert not g.complete(t1, lambda k: None)
    assert g.complete(t2, lambda k: None)

    t3, t4 = g.begin("p:1", tags=["product:1"]), g.begin("p:2", tags=["product:2"])
    g.void_tags(["product:1", "zzz"])
    assert not t3.valid and t4.valid
    assert g.complete(t4, lambda k: None)

    t = g.begin("x")
    g.void_all()
    assert not g.complete(t, lambda k: None)
    assert len(g) == 0


def test_fill_guard_released_and_dropped_tokens_leave_nothing_behind():
    g = FillGuard()
    t1, t2 = g.begin("a"), g.begin("a")
    t1.release()
    assert len(g) == 1
    del t2
    gc.collect()
    assert len(g) == 0
    t3 = g.begin("a")
    assert g.complete(t3, lambda k: None) and len(g) == 0


def test_full_jitter_backoff_is_bounded_and_grows():
    c = CacheClient("ws://127.0.0.1:1/ws", reconnect_min=0.1, reconnect_max=2.0)
    random.seed(7)
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (6, 2.0), (40, 2.0)]:
        samples = [c._backoff_delay(attempt) for _ in range(400)]
        assert all(0 <= s <= cap for s in samples), attempt
        assert max(samples) > cap * 0.9  # uses the whole range (full jitter)
        assert min(samples) < cap * 0.1


async def test_first_connect_failure_raises():
    from invalidator_client import ConnectError

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    c = CacheClient(f"ws://127.0.0.1:{port}/ws", connect_timeout=2, proxy=None)
    with pytest.raises(ConnectError):
        await c.start()
