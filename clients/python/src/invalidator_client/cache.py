"""The local cache: a protocol the client drives, and a bounded LRU implementation.

The client only ever calls the methods of :class:`LocalCache`; any object with them can be
passed to :class:`~invalidator_client.CacheClient` (a dict wrapper, a cache with TTLs, a
process-shared store, ...). Everything runs on one asyncio event loop, so no locking is needed.

Soft invalidation: an event with ``soft: true`` marks entries *stale* instead of dropping them.
A stale entry may still be served for up to ``max_stale`` seconds (while the application
refetches); after that it counts as a miss.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

__all__ = ["CacheEntry", "LocalCache", "LRUCache"]


@dataclass
class CacheEntry:
    value: Any
    #: ``time.monotonic()`` when a soft invalidation marked the entry stale; None when fresh.
    stale_since: float | None = None

    @property
    def stale(self) -> bool:
        return self.stale_since is not None


@runtime_checkable
class LocalCache(Protocol):
    """What :class:`~invalidator_client.CacheClient` needs from a local cache."""

    def get_entry(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` if it may still be served (fresh, or stale within the
        cache's ``max_stale``), else None (and a too-stale entry may be dropped)."""
        ...

    def set(self, key: str, value: Any) -> None:
        """Store a fresh value (called by ``complete_fill`` only)."""
        ...

    def delete(self, key: str) -> None: ...

    def delete_where(self, predicate: Callable[[str], bool]) -> None:
        """Drop every entry whose key ``predicate`` accepts."""
        ...

    def mark_stale(self, key: str) -> None:
        """Soft invalidation of one key (no-op if absent; keeps an older stale mark)."""
        ...

    def mark_stale_where(self, predicate: Callable[[str], bool]) -> None: ...

    def clear(self) -> None: ...

    def keys(self) -> Iterator[str]: ...

    def __len__(self) -> int: ...

    def __contains__(self, key: object) -> bool: ...


class LRUCache:
    """A bounded LRU cache (``collections.OrderedDict``) with serve-stale support.

    ``max_entries``: the least recently used entry is evicted beyond it (None: unbounded).
    ``max_stale``: seconds a soft-invalidated entry may still be served (0: never).
    ``clock``: a monotonic time source (for tests).
    ``on_evict(key)``: called when the cache drops an entry on its own (LRU eviction, or a
    stale entry past ``max_stale``), not for deletions the client asked for. The client sets
    it (when None) to stop tracking such keys on the server."""

    def __init__(
        self,
        max_entries: int | None = 10_000,
        max_stale: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError("max_entries must be at least 1 (or None)")
        if max_stale < 0:
            raise ValueError("max_stale must not be negative")
        self.max_entries = max_entries
        self.max_stale = max_stale
        self._clock = clock
        self._data: OrderedDict[str, CacheEntry] = OrderedDict()
        self.evictions = 0
        self.on_evict: Callable[[str], None] | None = None

    # -- reads --------------------------------------------------------------------------------

    def get_entry(self, key: str) -> CacheEntry | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.stale_since is not None and self._clock() - entry.stale_since >= self.max_stale:
            del self._data[key]
            self._evicted(key)
            return None
        self._data.move_to_end(key)
        return entry

    def get(self, key: str, default: Any = None) -> Any:
        """The value if it may be served (fresh or stale within ``max_stale``)."""
        entry = self.get_entry(key)
        return default if entry is None else entry.value

    def is_stale(self, key: str) -> bool:
        entry = self._data.get(key)
        return entry is not None and entry.stale

    def keys(self) -> Iterator[str]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"LRUCache(len={len(self)}, max_entries={self.max_entries}, max_stale={self.max_stale})"

    # -- writes -------------------------------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        self._data[key] = CacheEntry(value)
        self._data.move_to_end(key)
        if self.max_entries is not None:
            while len(self._data) > self.max_entries:
                old, _ = self._data.popitem(last=False)
                self.evictions += 1
                self._evicted(old)

    def _evicted(self, key: str) -> None:
        if self.on_evict is not None:
            self.on_evict(key)

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def delete_where(self, predicate: Callable[[str], bool]) -> None:
        for key in [k for k in self._data if predicate(k)]:
            del self._data[key]

    def mark_stale(self, key: str) -> None:
        entry = self._data.get(key)
        if entry is not None and entry.stale_since is None:
            entry.stale_since = self._clock()

    def mark_stale_where(self, predicate: Callable[[str], bool]) -> None:
        now = self._clock()
        for key, entry in self._data.items():
            if entry.stale_since is None and predicate(key):
                entry.stale_since = now

    def clear(self) -> None:
        self._data.clear()
