"""CacheClient against the real server binary over a real WebSocket (no mocks)."""

from __future__ import annotations

import asyncio
import tempfile

import pytest

from invalidator_client import CacheClient, ConnectError, LRUCache, ServerError

from conftest import Server


@pytest.fixture
async def make_client():
    clients: list[CacheClient] = []

    async def make(url: str, **kw) -> CacheClient:
        kw.setdefault("proxy", None)
        kw.setdefault("reconnect_min", 0.05)
        kw.setdefault("reconnect_max", 0.5)
        kw.setdefault("request_timeout", 5)
        c = CacheClient(url, **kw)
        await c.start()
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


async def synced(client: CacheClient, seq: int, timeout: float = 5.0) -> None:
    """Return once every event up to ``seq`` that reaches ``client`` has been applied: a pong
    carrying S is written after every event up to S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await client.ping() < seq:
        assert loop.time() < deadline, f"server seq never reached {seq}"
        await asyncio.sleep(0.01)


async def fill(client: CacheClient, key: str, value, tags=()) -> None:
    token = await client.begin_fill(key, tags=tags)
    assert client.complete_fill(token, value)


# ---- subscriptions and patterns ------------------------------------------------------------------


async def test_subscribed_key_invalidation_drops_the_key(server: Server, make_client, ns):
    c = await make_client(server.ws_url, subscriptions=[f"{ns}:*"])
    assert c.status.connected and c.status.epoch and c.status.sessions == 1
    # Cached without tracking: only the subscription can bring the event.
    c.cache.set(f"{ns}:1", "one")
    c.cache.set(f"{ns}:2", "two")
    r = await server.invalidate_keys([f"{ns}:1", "elsewhere:1"])
    assert await c.wait_until(lambda s: s.seq >= r["seq"])
    assert f"{ns}:1" not in c.cache
    assert c.get(f"{ns}:2") == "two"
    assert c.status.events == 1


async def test_unsubscribed_keys_are_not_touched(server: Server, make_client, ns):
    c = await make_client(server.ws_url, subscriptions=[f"{ns}:a:*"])
    c.cache.set(f"{ns}:b:1", 1)
    r = await server.invalidate_keys([f"{ns}:b:1"])
    await synced(c, r["seq"])
    assert c.get(f"{ns}:b:1") == 1
    assert c.status.events == 0


async def test_prefix_pattern_event_drops_matching_local_keys(server: Server, make_client, ns):
    c = await make_client(server.ws_url, subscriptions=[f"{ns}:*"])
    for k in ["a:1", "a:2", "a:", "b:1", "ab"]:
        c.cache.set(f"{ns}:{k}", k)
    r = await server.invalidate_pattern(f"{ns}:a:*")
    assert r["pattern_type"] == "prefix"
    await synced(c, r["seq"])
    assert sorted(c.cache.keys()) == [f"{ns}:ab", f"{ns}:b:1"]


async def test_glob_pattern_event_drops_matching_local_keys(server: Server, make_client, ns):
    c = await make_client(server.ws_url, subscriptions=[f"{ns}:*"])
    keys = ["1:profile", "2:profile", "é:profile", "12:profile", "1:settings"]
    for k in keys:
        c.cache.set(f"{ns}:{k}", k)
    r = await server.invalidate_pattern(f"{ns}:?:profile")
    assert r["pattern_type"] == "glob"
    await synced(c, r["seq"])
    assert sorted(c.cache.keys()) == [f"{ns}:12:profile", f"{ns}:1:settings"]
    r = await server.invalidate_pattern(f"{ns}:*:settings")
    await synced(c, r["seq"])
    assert list(c.cache.keys()) == [f"{ns}:12:profile"]


async def test_suffix_and_regex_pattern_events(server: Server, make_client, ns):
    c = await make_client(server.ws_url, subscriptions=[f"{ns}:*"])
    for k in ["1:profile", "2:profile", "3:other", "10", "x1"]:
        c.cache.set(f"{ns}:{k}", k)
    r = await server.invalidate_pattern(f"*:{ns}suffix")  # reaches nothing here
    r = await server.invalidate_pattern(f"{ns}:[0-9]+", "regex")
    await synced(c, r["seq"])
    assert f"{ns}:10" not in c.cache and f"{ns}:x1" in c.cache
    assert f"{ns}:1:profile" in c.cache  # anchored: the whole key must match
    # A suffix pattern reaches a prefix subscription (they may overlap).
    c2 = await make_client(server.ws_url, subscriptions=[f"*:{ns}"])
    c2.cache.set(f"a:{ns}", 1)
    c2.cache.set(f"b:{ns}", 2)
    c2.cache.set(f"b:{ns}:x", 3)
    r = await server.invalidate_pattern(f"b:*:{ns}", "glob")
    r = await server.invalidate_pattern(f"*:{ns}")
    assert r["pattern_type"] == "suffix"
    await synced(c2, r["seq"])
    assert list(c2.cache.keys()) == [f"b:{ns}:x"]


async def test_escaped_wildcard_is_a_literal_key(server: Server, make_client, ns):
    c = await make_client(server.ws_url, subscriptions=[f"{ns}:*"])
    c.cache.set(f"{ns}:*", "star")
    c.cache.set(f"{ns}:abc", "abc")
    r = await server.invalidate_pattern(f"{ns}:\\*")
    assert r["pattern_type"] == "exact"
    await synced(c, r["seq"])
    assert f"{ns}:*" not in c.cache
    assert c.get(f"{ns}:abc") == "abc"


async def test_uninterpretable_pattern_clears_the_cache(server: Server, make_client, ns):
    c = await make_client(server.ws_url, subscriptions=[f"{ns}:*"])
    c.cache.set(f"{ns}:abc", 1)
    c.cache.set("unrelated:1", 2)
    # Valid Rust regex, but Python's re has no \p{...}: the client cannot tell what it covers.
    r = await server.invalidate_pattern(f"{ns}:\\p{{Greek}}+", "regex")
    await synced(c, r["seq"])
    assert len(c.cache) == 0
    assert c.status.uninterpretable == 1


async def test_refused_subscription_is_a_server_error_and_the_connection_stays(server: Server, make_client, ns):
    c = await make_client(server.ws_url)
    with pytest.raises(ServerError) as e:
        await c.subscribe([{"pattern": f"{ns}:(", "pattern_type": "regex"}])
    assert e.value.code == "invalid_pattern"
    assert c.subscriptions == []
    assert await c.ping() > 0
    patterns = await c.subscribe([f"{ns}:*", (f"{ns}:[0-9]+", "regex")])
    assert {"pattern": f"{ns}:*", "pattern_type": "prefix"} in patterns
    c.cache.set(f"{ns}:1", 1)
    r = await server.invalidate_keys([f"{ns}:1"])
    await synced(c, r["seq"])
    assert len(c.cache) == 0
    # A refused initial subscription fails start().
    with pytest.raises(ServerError):
        await make_client(server.ws_url, subscriptions=[{"pattern": "(", "pattern_type": "regex"}])


# ---- tracking and the fill guard -------------------------------------------------------------------


async def test_tracked_keys_get_events_without_subscriptions_one_shot(server: Server, make_client, ns):
    c = await make_client(server.ws_url)  # no subscriptions at all
    k, other = f"{ns}:k", f"{ns}:other"
    await fill(c, k, "v1")
    c.cache.set(other, "untracked")
    assert k in c.held_keys
    r = await server.invalidate_keys([k, other])
    assert await c.wait_until(lambda s: s.seq >= r["seq"])
    assert k not in c.cache
    assert c.get(other) == "untracked"  # never tracked: never told
    assert k not in c.held_keys  # one-shot: the server forgot it too

    # Not tracked any more: a second invalidation does not reach this connection.
    c.cache.set(k, "cached without tracking")
    events = c.status.events
    r = await server.invalidate_keys([k])
    await synced(c, r["seq"])
    assert c.status.events == events
    assert c.get(k) == "cached without tracking"

    # Tracked again, told again; a pattern invalidation reaches tracked keys by name.
    assert await c.track([k]) == 1
    r = await server.invalidate_pattern(f"{ns}:*")
    await synced(c, r["seq"])
    assert k not in c.cache
    assert r["matched_keys"] == [k]


async def test_fill_guard_refuses_a_value_invalidated_during_the_fill(server: Server, make_client, ns):
    c = await make_client(server.ws_url)
    k = f"{ns}:user"
    token = await c.begin_fill(k)
    # ... the application reads the source of truth; meanwhile the key changes:
    r = await server.invalidate_keys([k])
    await synced(c, r["seq"])
    assert not token.valid
    assert c.complete_fill(token, "stale value read before the update") is False
    assert k not in c.cache
    # Nothing arrived during this fill: stored.
    token = await c.begin_fill(k)
    assert c.complete_fill(token, "fresh") is True
    assert c.get(k) == "fresh"
    # A pattern covering the key voids the fill too.
    token = await c.begin_fill(f"{ns}:p:1")
    r = await server.invalidate_pattern(f"{ns}:p:*")
    await synced(c, r["seq"])
    assert c.complete_fill(token, "stale") is False
    assert c.fills_in_progress == 0


async def test_get_or_fill_loads_once_and_reloads_after_invalidation(server: Server, make_client, ns):
    c = await make_client(server.ws_url)
    k = f"{ns}:item"
    db = {k: 1}
    calls = []

    async def load(key):
        calls.append(key)
        await asyncio.sleep(0.05)
        return db[key]

    results = await asyncio.gather(*(c.get_or_fill(k, load) for _ in range(5)))
    assert results == [1] * 5 and calls == [k]
    assert await c.get_or_fill(k, load) == 1 and len(calls) == 1  # a hit
    db[k] = 2
    r = await server.invalidate_keys([k])
    await synced(c, r["seq"])
    assert await c.get_or_fill(k, lambda key: db[key]) == 2  # sync loaders work too
    assert c.get(k) == 2

    # An invalidation during a load: the value is returned but not cached.
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(key):
        started.set()
        await release.wait()
        return "old"

    def broken(key):
        raise LookupError(key)

    with pytest.raises(LookupError):
        await c.get_or_fill(f"{ns}:broken", broken)
    assert f"{ns}:broken" not in c.cache and f"{ns}:broken" not in c.held_keys
    assert c.fills_in_progress == 0

    task = asyncio.create_task(c.get_or_fill(f"{ns}:slow", slow))
    await started.wait()
    r = await server.invalidate_keys([f"{ns}:slow"])
    await synced(c, r["seq"])
    release.set()
    assert await task == "old"
    assert f"{ns}:slow" not in c.cache


async def test_lru_eviction_untracks_the_key(server: Server, make_client, ns):
    c = await make_client(server.ws_url, max_entries=2)
    for i in range(3):
        await fill(c, f"{ns}:{i}", i)
    assert f"{ns}:0" not in c.cache
    assert sorted(c.held_keys) == [f"{ns}:1", f"{ns}:2"]
    await asyncio.sleep(0.05)  # the batched untrack goes out
    events = c.status.events
    r = await server.invalidate_keys([f"{ns}:0"])
    await synced(c, r["seq"])
    assert c.status.events == events, "the evicted key should no longer be tracked on the server"
    r = await server.invalidate_keys([f"{ns}:1"])
    await synced(c, r["seq"])
    assert f"{ns}:1" not in c.cache and c.status.events == events + 1


# ---- resume, reconnect, restart ----------------------------------------------------------------------


async def test_disconnect_then_resume_replays_missed_events(server: Server, make_client, ns):
    c = await make_client(server.ws_url, subscriptions=[f"{ns}:sub:*"])
    await fill(c, f"{ns}:tracked", "t")
    c.cache.set(f"{ns}:sub:1", "s")
    c.cache.set(f"{ns}:keep", "k")
    before = c.status.seq
    during: list[tuple[int, bool, int]] = []
    c.on_event = lambda f: during.append((f["seq"], c.status.resuming, c.status.seq))
    c.disconnect()
    assert await c.wait_until(lambda s: not s.connected)
    r1 = await server.invalidate_keys([f"{ns}:tracked"])
    r2 = await server.invalidate_pattern(f"{ns}:sub:*")
    # Offline: nothing applied yet.
    assert f"{ns}:tracked" in c.cache and f"{ns}:sub:1" in c.cache
    c.reconnect()
    assert await c.wait_until(lambda s: s.connected and s.sessions == 2)
    st = c.status
    assert st.resets == 0 and st.resumes == 1
    assert st.replayed >= 2
    assert st.seq >= r2["seq"] > r1["seq"] > before
    assert f"{ns}:tracked" not in c.cache
    assert f"{ns}:sub:1" not in c.cache
    assert c.get(f"{ns}:keep") == "k"
    # The position does not move while the resume is in flight (a disconnect mid-replay must
    # resume from the old position again); it moves to the resumed seq at the end.
    replayed = [d for d in during if d[0] in (r1["seq"], r2["seq"])]
    assert len(replayed) == 2
    assert all(resuming and pos == before for _, resuming, pos in replayed), during
    # Live again after the resume.
    c.cache.set(f"{ns}:sub:2", 2)
    r = await server.invalidate_keys([f"{ns}:sub:2"])
    await synced(c, r["seq"])
    assert f"{ns}:sub:2" not in c.cache


async def test_reset_clears_cache_fills_and_held_keys(server: Server, make_client, ns):
    c = await make_client(server.ws_url, subscriptions=[f"{ns}:*"])
    await fill(c, f"{ns}:a", 1)
    c.cache.set("other:key", 2)
    token = await c.begin_fill(f"{ns}:b")
    seq = c.status.seq
    c.disconnect()
    assert await c.wait_until(lambda s: not s.connected)
    c._status.seq = seq + 10_000_000  # a position the server never reached
    c.reconnect()
    assert await c.wait_until(lambda s: s.connected and s.sessions == 2)
    st = c.status
    assert st.resets == 1 and st.last_reset_reason == "invalid_position"
    assert len(c.cache) == 0 and c.held_keys == {}
    assert c.complete_fill(token, "x") is False
    assert st.seq <= seq + 1000  # back at the new session's hello position
    # Coherent and live afterwards.
    c.cache.set(f"{ns}:c", 3)
    r = await server.invalidate_keys([f"{ns}:c"])
    await synced(c, r["seq"])
    assert f"{ns}:c" not in c.cache


async def test_fill_begun_while_offline_is_voided_by_the_replay(server: Server, make_client, ns):
    c = await make_client(server.ws_url)
    c.disconnect()
    assert await c.wait_until(lambda s: not s.connected)
    k = f"{ns}:offline"
    token = await c.begin_fill(k)  # cannot track now: tracked at the reconnect, before resume
    r = await server.invalidate_keys([k])
    c.reconnect()
    assert await c.wait_until(lambda s: s.connected and s.sessions == 2)
    assert c.status.seq >= r["seq"]
    assert c.complete_fill(token, "read before the invalidation") is False


async def test_sigkill_restart_reconnects_and_stays_coherent(fresh_server: Server, make_client, ns):
    srv = fresh_server
    c = await make_client(srv.ws_url, subscriptions=[f"{ns}:sub:*"], reconnect_min=0.05, reconnect_max=0.3)
    await fill(c, f"{ns}:a", "a")
    await fill(c, f"{ns}:b", "b")
    c.cache.set(f"{ns}:sub:1", "s")
    r0 = await srv.invalidate_keys([f"{ns}:sub:0"])
    await synced(c, r0["seq"])
    epoch_before = c.status.epoch

    srv.kill()
    assert await c.wait_until(lambda s: not s.connected)
    srv.start()  # same data dir, same port
    r1 = await srv.invalidate_keys([f"{ns}:a"])  # possibly before the client is back
    assert r1["seq"] > r0["seq"], "seq must keep growing across restarts"
    assert await c.wait_until(lambda s: s.connected and s.sessions == 2, timeout=15)
    st = c.status
    assert f"{ns}:a" not in c.cache, "an invalidation the client may have missed was applied"
    if st.resets:
        # Single node without a persisted history: a new epoch, and the cache was cleared.
        assert st.last_reset_reason in ("epoch_changed", "history_gap")
        assert st.epoch != epoch_before
        assert len(c.cache) == 0
    else:
        assert st.resumes == 1 and c.get(f"{ns}:b") == "b"

    # Coherent afterwards: tracking and subscriptions work on the new process.
    await fill(c, f"{ns}:c", "c")
    c.cache.set(f"{ns}:sub:2", "s2")
    r2 = await srv.invalidate_keys([f"{ns}:c", f"{ns}:sub:2"])
    await synced(c, r2["seq"])
    assert f"{ns}:c" not in c.cache and f"{ns}:sub:2" not in c.cache
    assert c.status.seq >= r2["seq"]


# ---- auth -------------------------------------------------------------------------------------------


async def test_token_via_header_and_query(make_client, ns):
    with tempfile.TemporaryDirectory(prefix="inv-py-") as d:
        srv = Server(d, extra_args=["--admin-token", "s3cret-token"])
        srv.start()
        try:
            with pytest.raises(ConnectError):
                await make_client(srv.ws_url)
            with pytest.raises(ConnectError):
                await make_client(srv.ws_url, token="wrong")
            srv.token = "s3cret-token"
            for via_query in (False, True):
                c = await make_client(srv.ws_url, token="s3cret-token", token_in_query=via_query, subscriptions=[f"{ns}:*"])
                c.cache.set(f"{ns}:1", 1)
                r = await srv.invalidate_keys([f"{ns}:1"])
                await synced(c, r["seq"])
                assert f"{ns}:1" not in c.cache
                await c.close()
        finally:
            srv.kill()


# ---- features other engineers are adding: tests detect support ----------------------------------------


def _require_tags(server: Server, ns: str) -> None:
    r = server.post("/invalidate/tag", {"tags": [f"{ns}-probe"], "triggered_by": "pytest"})
    if r.status == 404:
        pytest.skip("this server has no POST /invalidate/tag yet")
    assert r.status == 200, r


async def test_tag_invalidation_drops_tagged_keys(server: Server, make_client, ns):
    _require_tags(server, ns)
    c = await make_client(server.ws_url)
    p42, cat = f"{ns}:product:42", f"{ns}:catalog"
    await fill(c, f"{ns}:page:1", "page1", tags=[p42, cat])
    await fill(c, f"{ns}:page:2", "page2", tags=[cat])
    await fill(c, f"{ns}:plain", "plain")
    seen = []
    c.on_event = seen.append
    r = await server.apost("/invalidate/tag", {"tags": [p42], "triggered_by": "pytest"})
    assert r.status == 200 and r["tags"] == [p42]
    await synced(c, r["seq"])
    assert f"{ns}:page:1" not in c.cache
    assert c.get(f"{ns}:page:2") == "page2" and c.get(f"{ns}:plain") == "plain"
    assert seen and seen[-1]["keys"] == [f"{ns}:page:1"] and seen[-1]["tags"] == [p42]
    # One-shot: page:1 is no longer tracked; the catalog tag still reaches page:2.
    assert f"{ns}:page:1" not in c.held_keys
    # The fill guard honours tags.
    token = await c.begin_fill(f"{ns}:page:3", tags=[cat])
    r = await server.apost("/invalidate/tag", {"tags": [cat], "triggered_by": "pytest"})
    await synced(c, r["seq"])
    assert c.complete_fill(token, "stale") is False
    assert f"{ns}:page:2" not in c.cache and c.get(f"{ns}:plain") == "plain"


async def test_tags_are_retracked_after_a_reconnect(server: Server, make_client, ns):
    _require_tags(server, ns)
    c = await make_client(server.ws_url)
    await fill(c, f"{ns}:x", "x", tags=[f"{ns}:t"])
    c.disconnect()
    assert await c.wait_until(lambda s: not s.connected)
    c.reconnect()
    assert await c.wait_until(lambda s: s.connected and s.sessions == 2)
    r = await server.apost("/invalidate/tag", {"tags": [f"{ns}:t"], "triggered_by": "pytest"})
    await synced(c, r["seq"])
    assert f"{ns}:x" not in c.cache


async def test_soft_invalidation_serves_stale_while_refetching(server: Server, make_client, ns):
    k = f"{ns}:soft"
    probe = await server.invalidate_keys([f"{ns}:probe"], soft=True)
    if "soft" not in probe.body:
        pytest.skip("this server does not support soft invalidation yet")
    assert probe["soft"] is True
    c = await make_client(server.ws_url, cache=LRUCache(max_entries=100, max_stale=30))
    db = {k: "v1"}
    assert await c.get_or_fill(k, lambda key: db[key]) == "v1"
    db[k] = "v2"
    r = await server.invalidate_keys([k], soft=True)
    await synced(c, r["seq"])
    entry = c.get_entry(k)
    assert entry is not None and entry.stale and entry.value == "v1"
    assert c.status.soft_events == 1
    refetched = asyncio.Event()

    async def load(key):
        refetched.set()
        return db[key]

    assert await c.get_or_fill(k, load) == "v1"  # served stale at once ...
    await asyncio.wait_for(refetched.wait(), 5)  # ... while a refill runs
    for _ in range(500):
        if not c.get_entry(k).stale:
            break
        await asyncio.sleep(0.01)
    assert c.get(k) == "v2"
    # A hard invalidation still drops.
    r = await server.invalidate_keys([k])
    await synced(c, r["seq"])
    assert k not in c.cache
