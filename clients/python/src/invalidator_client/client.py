"""CacheClient: keeps a local cache coherent with an invalidator server over ``GET /ws``.

One background task holds one WebSocket connection. It subscribes to the configured patterns,
applies every ``invalidate`` event to the local cache, tracks the keys the application fills
(one-shot, as the server does), and on any disconnect (network, server restart, a 4008
slow-consumer close) reconnects with full-jitter exponential backoff and ``resume``s from the
last position it has fully applied: it re-subscribes and re-tracks every key it still holds
first, so the replay covers exactly what it missed. A ``reset`` (history gap, epoch change)
clears the local cache: the only safe answer when events may have been lost.

Position rule: the position (epoch, seq) advances on events, heartbeats, pongs and
(un)subscribe replies, but not while a ``resume`` is in flight: replayed events arrive then,
and a disconnect mid-replay must resume from the old position again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import json
import logging
import random
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence, Union
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .cache import CacheEntry, LocalCache, LRUCache
from .fill import FillGuard, FillToken
from .patterns import PatternError, PatternType, event_matcher

__all__ = [
    "CacheClient",
    "Status",
    "ClientError",
    "ConnectError",
    "NotConnected",
    "ServerError",
    "RequestTimeout",
    "ClientClosed",
]

log = logging.getLogger("invalidator_client")

PatternSpec = Union[str, Sequence[str], Mapping[str, Any]]
Loader = Callable[[str], Union[Any, Awaitable[Any]]]


class ClientError(Exception):
    """Base class of this library's errors."""


class ConnectError(ClientError):
    """The first connection could not be made."""


class NotConnected(ClientError):
    """No connection right now (the client keeps reconnecting in the background)."""


class ServerError(ClientError):
    """The server refused an operation with an ``error`` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RequestTimeout(ClientError):
    """No reply from the server within ``request_timeout``."""


class ClientClosed(ClientError):
    """The client has been closed."""


class _ProtocolViolation(Exception):
    pass


@dataclass
class Status:
    """Where the client stands (a snapshot: see :attr:`CacheClient.status`)."""

    #: Epoch and last fully applied ``seq``, once known.
    epoch: str | None = None
    seq: int = 0
    #: A session is open and its subscribe / re-track / resume have all been answered.
    connected: bool = False
    #: A ``resume`` is in flight (the position does not advance meanwhile).
    resuming: bool = False
    node_id: str | None = None
    #: Sessions established so far (1 after the first connect).
    sessions: int = 0
    #: ``reset`` frames received (each cleared the cache), and the last one's reason.
    resets: int = 0
    last_reset_reason: str | None = None
    #: ``resumed`` replies received, and the events they replayed (server's count).
    resumes: int = 0
    replayed: int = 0
    #: ``invalidate`` events applied (soft ones counted in both).
    events: int = 0
    soft_events: int = 0
    #: Events whose pattern this client could not interpret (each cleared the cache).
    uninterpretable: int = 0
    #: Failed connection attempts since the client started.
    connect_failures: int = 0
    #: Last error frame or connection problem, for diagnostics.
    last_error: str | None = None


def _normalize_spec(spec: PatternSpec) -> dict[str, Any]:
    if isinstance(spec, str):
        out: dict[str, Any] = {"pattern": spec}
    elif isinstance(spec, Mapping):
        out = {"pattern": spec["pattern"]}
        if spec.get("pattern_type") is not None:
            out["pattern_type"] = spec["pattern_type"]
    else:
        pattern, kind = spec  # (pattern, pattern_type)
        out = {"pattern": pattern}
        if kind is not None:
            out["pattern_type"] = kind
    if not isinstance(out["pattern"], str) or not out["pattern"]:
        raise ValueError(f"invalid subscription pattern {spec!r}")
    if "pattern_type" in out:
        out["pattern_type"] = PatternType.parse(out["pattern_type"]).value  # type: ignore[union-attr]
    return out


def _check_keys(keys: Iterable[str]) -> list[str]:
    if isinstance(keys, str):
        keys = [keys]
    out = list(keys)
    for k in out:
        if not isinstance(k, str) or not k:
            raise ValueError(f"keys must be non-empty strings, got {k!r}")
    return out


class _Load:
    __slots__ = ("task", "token")

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.token: FillToken | None = None

    def joinable(self) -> bool:
        # Joining is safe while the fill has not started reading (no token yet) or while no
        # invalidation has voided it; a voided fill may have read a value older than the caller.
        return (
            self.task is not None
            and not self.task.done()
            and (self.token is None or self.token.valid)
        )


class CacheClient:
    """A cache manager connected to an invalidator server.

    ``url``: ``ws://host:port/ws``. ``token``: sent as ``Authorization: Bearer`` (or as
    ``?token=`` with ``token_in_query=True``). ``subscriptions``: patterns as strings (type
    inferred), ``(pattern, pattern_type)`` pairs or ``{"pattern", "pattern_type"}`` dicts.
    ``cache``: any :class:`~invalidator_client.LocalCache`; by default an
    :class:`~invalidator_client.LRUCache` of ``max_entries`` with serve-stale up to
    ``max_stale`` seconds. Reconnects wait ``uniform(0, min(reconnect_max, reconnect_min *
    2**(n-1)))`` before attempt n (full jitter). ``on_event(frame)`` (sync or async) is
    called after each ``invalidate`` / ``reset`` frame has been applied.

    Use as ``async with CacheClient(url, subscriptions=[...]) as client:`` or call
    :meth:`start` and :meth:`close`. All methods must be called from the event loop that
    started the client."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_in_query: bool = False,
        subscriptions: Iterable[PatternSpec] = (),
        cache: LocalCache | None = None,
        max_entries: int | None = 10_000,
        max_stale: float = 30.0,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        on_event: Callable[[dict], Any] | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        proxy: str | bool | None = True,
    ) -> None:
        if reconnect_min <= 0 or reconnect_max < reconnect_min:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        self.url = url
        self._token = token
        self._token_in_query = token_in_query
        self._subs: list[dict[str, Any]] = []
        for s in subscriptions:
            n = _normalize_spec(s)
            if n not in self._subs:
                self._subs.append(n)
        self.cache: LocalCache = cache if cache is not None else LRUCache(max_entries, max_stale)
        if hasattr(self.cache, "on_evict") and getattr(self.cache, "on_evict", None) is None:
            try:
                self.cache.on_evict = self._on_evict  # type: ignore[attr-defined]
            except AttributeError:
                pass
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.on_event = on_event
        self._max_message_bytes = max_message_bytes
        self._proxy = proxy

        self._fills = FillGuard()
        #: Keys tracked on the server on our behalf (with their tags): re-tracked on reconnect.
        self._held: dict[str, frozenset[str]] = {}
        self._status = Status()
        self._changed = asyncio.Event()

        self._ws: ClientConnection | None = None
        self._send_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        #: Handshake requests of the current session: id -> (op, keys for a track).
        self._handshake: dict[int, tuple[str, list[str]]] = {}
        self._session_epoch: str | None = None
        self._hello_seq = 0

        self._task: asyncio.Task | None = None
        self._first: asyncio.Future | None = None
        self._closed = False
        self._offline = False
        self._wake = asyncio.Event()
        self._loads: dict[str, _Load] = {}
        self._untrack_pending: set[str] = set()
        self._untrack_task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    # ---- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> "CacheClient":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, subscribe, and keep the cache coherent from now on. Raises
        :class:`ConnectError` if the first connection cannot be made, or :class:`ServerError`
        if the server refuses the subscriptions; later disconnects are retried forever."""
        if self._closed:
            raise ClientClosed("the client has been closed")
        if self._task is not None:
            return await self.wait_ready()
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._task = asyncio.create_task(self._run(), name="invalidator-client")
        try:
            await self._first
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and stop reconnecting. The cache stays as it is."""
        self._closed = True
        self._wake.set()
        ws = self._ws
        task, self._task = self._task, None
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:
                pass
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except BaseException:
                pass
        for t in list(self._background):
            t.cancel()
        self._fail_pending(ClientClosed("the client has been closed"))
        self._set(connected=False)

    def disconnect(self) -> None:
        """Drop the connection and stay offline until :meth:`reconnect` (for tests and
        maintenance). Invalidations published meanwhile are replayed by the resume."""
        self._offline = True
        ws = self._ws
        if ws is not None:
            self._spawn(ws.close())

    def reconnect(self) -> None:
        """Reconnect (and resume) after :meth:`disconnect`, or skip the current backoff wait."""
        self._offline = False
        self._wake.set()

    # ---- status ---------------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        return dataclasses.replace(self._status)

    @property
    def connected(self) -> bool:
        return self._status.connected

    @property
    def held_keys(self) -> dict[str, frozenset[str]]:
        """Keys this client has asked the server to track (and their tags)."""
        return dict(self._held)

    @property
    def subscriptions(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self._subs]

    @property
    def fills_in_progress(self) -> int:
        return len(self._fills)

    async def wait_until(self, cond: Callable[[Status], bool], timeout: float = 10.0) -> bool:
        """Wait until ``cond(status)`` holds; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond(self._status):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), remaining)
            except asyncio.TimeoutError:
                return cond(self._status)
        return True

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until a session is open and its handshake (and any resume) is answered."""
        return await self.wait_until(
            lambda s: s.connected, self.request_timeout if timeout is None else timeout
        )

    def _set(self, **changes: Any) -> None:
        for k, v in changes.items():
            setattr(self._status, k, v)
        self._notify()

    def _notify(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    # ---- the cache ------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The cached value (fresh, or stale within ``max_stale``), else ``default``."""
        entry = self.cache.get_entry(key)
        return default if entry is None else entry.value

    def get_entry(self, key: str) -> CacheEntry | None:
        return self.cache.get_entry(key)

    async def begin_fill(self, key: str, tags: Iterable[str] = ()) -> FillToken:
        """Start filling ``key``: registers the fill and tracks the key on the server (with
        ``tags``), then returns. Read the source of truth only after this returns, then call
        :meth:`complete_fill`. While disconnected the key is tracked at the reconnect, before
        the resume, so an invalidation missed meanwhile still voids the token."""
        (key,) = _check_keys([key])
        tags = frozenset(_check_tags(tags))
        token = self._fills.begin(key, tags)
        try:
            await self.track([key], tags=tags)
        except NotConnected:
            pass
        except BaseException:
            token.release()
            raise
        return token

    def complete_fill(self, token: FillToken, value: Any) -> bool:
        """Store ``value`` unless ``token``'s key was invalidated (by key, pattern, tag or
        reset; soft invalidations too) since :meth:`begin_fill`. Returns whether it stored."""
        return self._fills.complete(token, lambda key: self.cache.set(key, value))

    async def get_or_fill(self, key: str, loader: Loader, *, tags: Iterable[str] = ()) -> Any:
        """The cached value; on a miss, ``loader(key)`` (sync or async) under the fill guard.

        A stale entry (soft invalidation, within ``max_stale``) is returned at once while a
        background refill runs. Concurrent misses of one key share one load, unless an
        invalidation voided it (then a new load starts). The loaded value is returned even
        when the guard refused to store it (it is as fresh as a direct read)."""
        entry = self.cache.get_entry(key)
        if entry is not None:
            if entry.stale:
                load = self._loads.get(key)
                if load is None or not load.joinable():
                    self._start_load(key, loader, tags, background=True)
            return entry.value
        load = self._loads.get(key)
        if load is None or not load.joinable():
            load = self._start_load(key, loader, tags)
        assert load.task is not None
        return await asyncio.shield(load.task)

    def _start_load(self, key: str, loader: Loader, tags: Iterable[str], background: bool = False) -> _Load:
        load = _Load()
        tags = frozenset(_check_tags(tags))

        async def run() -> Any:
            token = await self.begin_fill(key, tags)
            load.token = token
            try:
                value = loader(key)
                if inspect.isawaitable(value):
                    value = await value
            except BaseException:
                token.release()
                if key not in self.cache and key not in self._fills.keys():
                    self._schedule_untrack([key])
                raise
            self.complete_fill(token, value)
            return value

        load.task = asyncio.ensure_future(run())
        self._loads[key] = load

        def done(t: asyncio.Task) -> None:
            if self._loads.get(key) is load:
                del self._loads[key]
            exc = None if t.cancelled() else t.exception()  # retrieved: callers may be gone
            if background and exc is not None:
                log.warning("background refill of %r failed: %r", key, exc)

        load.task.add_done_callback(done)
        return load

    def _on_evict(self, key: str) -> None:
        # The cache dropped a key on its own (LRU eviction, staleness): stop tracking it.
        if key in self._held and key not in self._fills.keys():
            self._schedule_untrack([key])

    def _schedule_untrack(self, keys: Iterable[str]) -> None:
        for k in keys:
            self._held.pop(k, None)
            self._untrack_pending.add(k)
        if self._untrack_task is None or self._untrack_task.done():
            try:
                self._untrack_task = self._spawn(self._flush_untrack())
            except RuntimeError:  # no running loop
                pass

    async def _flush_untrack(self) -> None:
        await asyncio.sleep(0)
        keys = [k for k in self._untrack_pending if k not in self._held]
        self._untrack_pending.clear()
        if keys and self._ws is not None:
            try:
                await self._request({"op": "untrack", "keys": keys})
            except ClientError as e:
                log.debug("untrack failed: %s", e)

    # ---- operations -----------------------------------------------------------------------------

    async def track(self, keys: Iterable[str], tags: Iterable[str] = ()) -> int:
        """Tell the server this client holds ``keys`` (one-shot tracking), with ``tags``
        attached to each. Returns how many keys the server now tracks for this connection.
        Raises :class:`NotConnected` while disconnected (the keys are tracked at the
        reconnect anyway)."""
        keys = _check_keys(keys)
        tags = frozenset(_check_tags(tags))
        fresh = [k for k in keys if k not in self._held]
        for k in keys:
            self._held[k] = self._held.get(k, frozenset()) | tags
            self._untrack_pending.discard(k)
        frame: dict[str, Any] = {"op": "track", "keys": keys}
        if tags:
            frame["tags"] = sorted(tags)
        try:
            reply = await self._request(frame)
        except ServerError:
            for k in fresh:
                self._held.pop(k, None)
            raise
        return int(reply.get("count", 0))

    async def untrack(self, keys: Iterable[str]) -> int:
        keys = _check_keys(keys)
        for k in keys:
            self._held.pop(k, None)
        reply = await self._request({"op": "untrack", "keys": keys})
        return int(reply.get("count", 0))

    async def subscribe(self, patterns: Iterable[PatternSpec]) -> list[dict[str, Any]]:
        """Add subscriptions (kept across reconnects). Returns the server's list of this
        connection's patterns. Raises :class:`ServerError` (nothing added) if refused."""
        specs = [_normalize_spec(p) for p in patterns]
        added = [s for s in specs if s not in self._subs]
        self._subs.extend(added)
        try:
            reply = await self._request({"op": "subscribe", "patterns": specs})
        except ServerError:
            for s in added:
                self._subs.remove(s)
            raise
        return list(reply.get("patterns", []))

    async def unsubscribe(self, patterns: Iterable[PatternSpec]) -> list[dict[str, Any]]:
        specs = [_normalize_spec(p) for p in patterns]
        self._subs = [s for s in self._subs if s not in specs]
        reply = await self._request({"op": "unsubscribe", "patterns": specs})
        return list(reply.get("patterns", []))

    async def ping(self) -> int:
        """Round trip to the server; returns its current ``seq`` (and advances the position)."""
        reply = await self._request({"op": "ping"})
        return int(reply.get("seq", 0))

    async def _request(self, frame: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise ClientClosed("the client has been closed")
        loop = asyncio.get_running_loop()
        async with self._send_lock:
            ws = self._ws
            if ws is None:
                raise NotConnected("not connected")
            id = next(self._ids)
            fut = loop.create_future()
            self._pending[id] = fut
            try:
                await ws.send(json.dumps({**frame, "id": id}))
            except (ConnectionClosed, OSError) as e:
                self._pending.pop(id, None)
                raise NotConnected(f"connection lost: {e}") from None
        try:
            return await asyncio.wait_for(fut, self.request_timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"no reply to {frame['op']} within {self.request_timeout}s") from None
        finally:
            self._pending.pop(id, None)

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: the requester may have given up already

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    # ---- connection loop ------------------------------------------------------------------------

    def _connect_url(self) -> str:
        if self._token and self._token_in_query:
            sep = "&" if "?" in self.url else "?"
            return f"{self.url}{sep}token={quote(self._token, safe='')}"
        return self.url

    def _backoff_delay(self, attempt: int) -> float:
        cap = min(self.reconnect_max, self.reconnect_min * (2 ** min(attempt - 1, 30)))
        return random.uniform(0, cap)

    async def _sleep_interruptibly(self, delay: float | None) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            if self._offline:
                await self._sleep_interruptibly(None)
                continue
            headers = {}
            if self._token and not self._token_in_query:
                headers["Authorization"] = f"Bearer {self._token}"
            try:
                ws = await connect(
                    self._connect_url(),
                    additional_headers=headers or None,
                    open_timeout=self.connect_timeout,
                    max_size=self._max_message_bytes,
                    max_queue=1024,
                    compression=None,
                    proxy=self._proxy,
                )
            except asyncio.CancelledError:
                raise
            except (OSError, InvalidHandshake, InvalidURI, asyncio.TimeoutError, ValueError) as e:
                msg = f"cannot connect to {self.url}: {e!r}"
                self._status.connect_failures += 1
                self._set(last_error=msg)
                if self._first is not None and not self._first.done():
                    self._first.set_exception(ConnectError(msg))
                    return
                attempt += 1
                delay = self._backoff_delay(attempt)
                log.info("%s; retrying in %.2fs", msg, delay)
                await self._sleep_interruptibly(delay)
                continue
            try:
                await self._open(ws)
                attempt = 0
                if not (self._offline or self._closed):
                    await self._read_loop(ws)
            except asyncio.CancelledError:
                await _close_quietly(ws)
                raise
            except (ConnectionClosed, OSError, asyncio.TimeoutError, _ProtocolViolation) as e:
                log.info("connection to %s lost: %r", self.url, e)
                self._set(last_error=f"connection lost: {e!r}")
            except Exception as e:  # a bug: log it, reconnect rather than die
                log.exception("session with %s failed", self.url)
                self._set(last_error=f"session failed: {e!r}")
            finally:
                self._end_session()
            await _close_quietly(ws)
            if self._first is not None and not self._first.done():
                self._first.set_exception(
                    ConnectError(f"connection to {self.url} ended during the handshake: {self._status.last_error}")
                )
                return
            if self._closed or self._offline:
                continue
            attempt += 1
            await self._sleep_interruptibly(self._backoff_delay(attempt))

    def _end_session(self) -> None:
        self._ws = None
        self._handshake = {}
        self._status.resuming = False
        self._fail_pending(NotConnected("connection lost"))
        self._set(connected=False)

    async def _open(self, ws: ClientConnection) -> None:
        """Read ``hello``; send subscribe, re-track held keys and resume from the position."""
        raw = await asyncio.wait_for(ws.recv(), self.connect_timeout)
        try:
            hello = json.loads(raw)
        except ValueError:
            hello = None
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            raise _ProtocolViolation(f"expected hello, got {raw!r:.200}")
        self._session_epoch = str(hello.get("epoch", ""))
        self._hello_seq = _as_int(hello.get("seq")) or 0
        self._status.node_id = hello.get("node_id")
        async with self._send_lock:
            self._ws = ws
            self._handshake = {}
            if self._subs:
                await self._send_handshake(ws, "subscribe", {"op": "subscribe", "patterns": self._subs})
            groups: dict[frozenset[str], list[str]] = {}
            for key, tags in self._held.items():
                groups.setdefault(tags, []).append(key)
            for tags, keys in groups.items():
                for i in range(0, len(keys), 5000):
                    chunk = keys[i : i + 5000]
                    frame: dict[str, Any] = {"op": "track", "keys": chunk}
                    if tags:
                        frame["tags"] = sorted(tags)
                    await self._send_handshake(ws, "track", frame, chunk)
            if self._status.epoch is not None:
                self._status.resuming = True
                await self._send_handshake(
                    ws,
                    "resume",
                    {"op": "resume", "epoch": self._status.epoch, "since_seq": self._status.seq},
                )
            else:
                self._status.epoch = self._session_epoch
                self._status.seq = self._hello_seq
            self._status.sessions += 1
            if not self._handshake:
                self._handshake_done()
            self._notify()

    async def _send_handshake(self, ws: ClientConnection, op: str, frame: dict, keys: list[str] | None = None) -> None:
        id = next(self._ids)
        self._handshake[id] = (op, keys or [])
        await ws.send(json.dumps({**frame, "id": id}))

    def _handshake_done(self) -> None:
        self._set(connected=True)
        if self._first is not None and not self._first.done():
            self._first.set_result(None)

    async def _read_loop(self, ws: ClientConnection) -> None:
        async for raw in ws:
            if isinstance(raw, bytes):
                continue
            try:
                frame = json.loads(raw)
            except ValueError:
                log.warning("server sent a frame that is not JSON: %.200r", raw)
                continue
            if not isinstance(frame, dict):
                continue
            try:
                self._apply(frame)
            except Exception:
                # A failing cache or callback must not stop the client; an event that was not
                # applied may leave stale entries, so drop everything.
                log.exception("applying a %r frame failed: clearing the local cache", frame.get("type"))
                self._fills.void_all()
                try:
                    self.cache.clear()
                except Exception:
                    log.exception("clearing the local cache failed")

    # ---- applying frames ------------------------------------------------------------------------

    def _apply(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        seq = _as_int(frame.get("seq"))
        if kind == "invalidate":
            self._invalidate(frame)
            st = self._status
            st.events += 1
            if frame.get("soft"):
                st.soft_events += 1
            self._advance(seq)
            self._emit(frame)
        elif kind == "resumed":
            self._status.resuming = False
            self._status.resumes += 1
            self._status.replayed += _as_int(frame.get("replayed")) or 0
            self._advance(seq)
            self._reply(frame, frame)
        elif kind == "reset":
            self._reset(str(frame.get("reason")))
            self._reply(frame, frame)
            self._emit(frame)
        elif kind in ("heartbeat", "pong", "subscribed", "unsubscribed"):
            self._advance(seq)
            self._reply(frame, frame)
        elif kind in ("tracked", "untracked", "accepted"):
            self._reply(frame, frame)
        elif kind == "error":
            code = str(frame.get("code", ""))
            message = str(frame.get("message", ""))
            log.warning("server refused an operation: %s: %s", code, message)
            self._status.last_error = f"{code}: {message}"
            self._reply(frame, ServerError(code, message))
        self._notify()

    def _reply(self, frame: dict[str, Any], result: Any) -> None:
        id = frame.get("id")
        if not isinstance(id, int):
            return
        hs = self._handshake.pop(id, None)
        if hs is not None:
            self._handshake_reply(hs, result)
            if not self._handshake:
                self._handshake_done()
            return
        fut = self._pending.pop(id, None)
        if fut is not None and not fut.done():
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    def _handshake_reply(self, hs: tuple[str, list[str]], result: Any) -> None:
        op, keys = hs
        if not isinstance(result, ServerError):
            return
        if op == "subscribe":
            log.error("the server refused the subscriptions: %s", result)
            if self._first is not None and not self._first.done():
                self._first.set_exception(result)
            else:
                # Events for keys cached under those subscriptions may be missed from now on.
                self._fills.void_all()
                self.cache.clear()
        elif op == "track":
            # Keys the server will not track cannot be kept coherent: drop them.
            log.warning("re-tracking %d keys refused (%s): dropping them", len(keys), result)
            for k in keys:
                self._held.pop(k, None)
                self._fills.void_key(k)
                self.cache.delete(k)
        elif op == "resume":
            self._reset(f"resume refused: {result.code}")

    def _reset(self, reason: str) -> None:
        log.info("reset (%s): clearing the local cache", reason)
        self._fills.void_all()
        self.cache.clear()
        self._held.clear()
        st = self._status
        st.resuming = False
        st.resets += 1
        st.last_reset_reason = reason
        st.epoch = self._session_epoch
        st.seq = self._hello_seq

    def _advance(self, seq: int | None) -> None:
        if seq is not None and not self._status.resuming:
            if seq > self._status.seq:
                self._status.seq = seq

    def _invalidate(self, frame: dict[str, Any]) -> None:
        """Apply an ``invalidate`` event: its keys; for a tag event every held key carrying
        one of its tags; for a pattern event the pattern itself (the event's keys are only the
        keys this connection tracked, the cache may hold others)."""
        soft = frame.get("soft") is True
        cache, fills, held = self.cache, self._fills, self._held
        drop = cache.mark_stale if soft else cache.delete
        keys = frame.get("keys") or []
        for k in keys if isinstance(keys, list) else []:
            if isinstance(k, str):
                fills.void_key(k)
                drop(k)
                held.pop(k, None)
        tags = frame.get("tags")
        if isinstance(tags, list) and tags:
            tagset = {t for t in tags if isinstance(t, str)}
            fills.void_tags(tagset)
            for k in [k for k, t in held.items() if not tagset.isdisjoint(t)]:
                drop(k)
                held.pop(k, None)
        pattern = frame.get("pattern")
        if not isinstance(pattern, str):
            return
        try:
            matches = event_matcher(pattern, frame.get("pattern_type"))
        except PatternError as e:
            # Cannot tell what it covers: dropping everything is the only safe answer.
            log.warning("cannot interpret invalidation pattern %r (%s): clearing the cache", pattern, e)
            self._status.uninterpretable += 1
            fills.void_all()
            cache.clear()
            return
        fills.void_where(matches)
        if soft:
            cache.mark_stale_where(matches)
        else:
            cache.delete_where(matches)
        for k in [k for k in held if matches(k)]:
            del held[k]

    def _emit(self, frame: dict[str, Any]) -> None:
        cb = self.on_event
        if cb is None:
            return
        try:
            r = cb(frame)
            if inspect.isawaitable(r):
                self._spawn(r)
        except Exception:
            log.exception("on_event callback failed")


def _check_tags(tags: Iterable[str] | None) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    out = list(tags)
    for t in out:
        if not isinstance(t, str) or not t:
            raise ValueError(f"tags must be non-empty strings, got {t!r}")
    return out


def _as_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


async def _close_quietly(ws: ClientConnection) -> None:
    try:
        await asyncio.wait_for(ws.close(), 2)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, asyncio.CancelledError):
            raise
