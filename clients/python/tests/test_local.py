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


# ---- applying SPEC-shaped frames (the client's event logic, without a connection) ----------------


def _client(**kw) -> CacheClient:
    return CacheClient("ws://127.0.0.1:1/ws", **kw)


def _event(seq, keys=(), pattern=None, pattern_type=None, tags=None, soft=False):
    return {"type": "invalidate", "seq": seq, "epoch": "e1", "request_id": "r", "triggered_by": "t",
            "published_at": "2025-01-15T10:30:00.123Z", "keys": list(keys), "pattern": pattern,
            "pattern_type": pattern_type, "tags": tags, "soft": soft}


def test_tag_event_drops_keys_carrying_the_tags_and_voids_their_fills():
    c = _client()
    for k in ("p:1", "p:2", "p:3"):
        c.cache.set(k, k)
    c._held = {"p:1": frozenset({"product:42", "catalog"}), "p:2": frozenset({"catalog"}), "p:3": frozenset()}
    t_tagged = c._fills.begin("p:9", tags=["product:42"])
    t_plain = c._fills.begin("p:8")
    c._status.epoch = "e1"
    # The server names the keys; the client also drops any held key carrying the tag.
    c._apply(_event(5, keys=[], tags=["product:42"]))
    assert "p:1" not in c.cache and "p:1" not in c._held
    assert "p:2" in c.cache and "p:3" in c.cache
    assert not t_tagged.valid and t_plain.valid
    assert c.status.seq == 5 and c.status.events == 1


def test_soft_events_mark_stale_instead_of_dropping():
    clock = FakeClock()
    c = _client(cache=LRUCache(max_stale=10, clock=clock))
    for k in ("u:1", "u:2", "v:1"):
        c.cache.set(k, k)
    token = c._fills.begin("u:1")
    c._apply(_event(1, keys=["u:1"], soft=True))
    c._apply(_event(2, pattern="u:*", pattern_type="prefix", soft=True))
    assert c.get_entry("u:1").stale and c.get_entry("u:2").stale and not c.get_entry("v:1").stale
    assert c.get("u:1") == "u:1"  # served stale
    assert not token.valid, "a soft invalidation voids fills too: the value read may be old"
    assert c.status.soft_events == 2
    clock.t += 11
    assert c.get("u:1") is None  # past max_stale: a miss
    c._apply(_event(3, keys=["v:1"]))  # hard
    assert "v:1" not in c.cache


def test_position_does_not_advance_while_resuming_and_reset_moves_it_to_hello():
    c = _client()
    c._status.epoch, c._status.seq = "old", 10
    c._status.resuming = True
    c._apply(_event(11, keys=["a"]))
    c._apply({"type": "heartbeat", "seq": 12})
    assert c.status.seq == 10
    c._apply({"type": "resumed", "replayed": 1, "seq": 12})
    assert c.status.seq == 12 and not c.status.resuming
    c._apply({"type": "pong", "seq": 14})
    assert c.status.seq == 14
    c._apply({"type": "heartbeat", "seq": 13})
    assert c.status.seq == 14  # never backwards
    c.cache.set("x", 1)
    c._session_epoch, c._hello_seq = "new", 100
    c._apply({"type": "reset", "reason": "epoch_changed"})
    st = c.status
    assert (st.epoch, st.seq, st.resets, len(c.cache)) == ("new", 100, 1, 0)

