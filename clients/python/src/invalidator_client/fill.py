"""The fill guard: stops the stale-set race of a cache-aside client.

The race: a client misses key K, reads K from the source of truth, and meanwhile K is updated
and invalidated; the client then stores the value it read, which is already stale, and keeps it
until the next invalidation. Like memcache leases, :meth:`FillGuard.begin` hands out a token,
every invalidation covering K (by key, pattern, tag or reset; soft ones too) voids the tokens of
K, and :meth:`FillGuard.complete` stores only with a token that is still valid. Everything runs
on one event loop, so the validity check and the store cannot be interleaved with an event.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable

__all__ = ["FillGuard", "FillToken"]


class FillToken:
    """Permission to store one value for one key, valid until that key is invalidated."""

    __slots__ = ("key", "id", "tags", "_guard", "__weakref__")

    def __init__(self, key: str, id: int, tags: frozenset[str], guard: "FillGuard") -> None:
        self.key = key
        self.id = id
        self.tags = tags
        self._guard: FillGuard | None = guard

    @property
    def valid(self) -> bool:
        """Whether no invalidation of the key arrived since ``begin`` (and not completed)."""
        g = self._guard
        return g is not None and self.id in g._inflight.get(self.key, {})

    def release(self) -> None:
        """Abandon the fill (nothing is stored)."""
        g, self._guard = self._guard, None
        if g is not None:
            g._remove(self.key, self.id)

    def __del__(self) -> None:  # an abandoned token must not leave its entry behind
        try:
            self.release()
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"FillToken(key={self.key!r}, id={self.id}, valid={self.valid})"


class FillGuard:
    """Fills in progress, by key."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        #: key -> {token id: tags}
        self._inflight: dict[str, dict[int, frozenset[str]]] = {}

    def begin(self, key: str, tags: Iterable[str] = ()) -> FillToken:
        """Start filling ``key``. Read the source of truth only after this returns."""
        tags = frozenset(tags)
        token = FillToken(key, next(self._ids), tags, self)
        self._inflight.setdefault(key, {})[token.id] = tags
        return token

    def complete(self, token: FillToken, store: Callable[[str], None]) -> bool:
        """Run ``store(key)`` only if no invalidation of the key arrived since ``begin``.
        Returns whether it ran. A token can be completed once."""
        if token._guard is not self:
            return False
        token._guard = None
        if not self._remove(token.key, token.id):
            return False
        store(token.key)
        return True

    def _remove(self, key: str, id: int) -> bool:
        ids = self._inflight.get(key)
        if ids is None or id not in ids:
            return False
        del ids[id]
        if not ids:
            del self._inflight[key]
        return True

    def void_key(self, key: str) -> None:
        self._inflight.pop(key, None)

    def void_where(self, predicate: Callable[[str], bool]) -> None:
        """Void every fill whose key ``predicate`` accepts (pattern invalidation)."""
        for key in [k for k in self._inflight if predicate(k)]:
            del self._inflight[key]

    def void_tags(self, tags: Iterable[str]) -> None:
        """Void every fill begun with one of ``tags``."""
        tags = set(tags)
        if not tags:
            return
        for key in list(self._inflight):
            ids = self._inflight[key]
            for id in [i for i, t in ids.items() if not tags.isdisjoint(t)]:
                del ids[id]
            if not ids:
                del self._inflight[key]

    def void_all(self) -> None:
        self._inflight.clear()

    def __len__(self) -> int:
        return sum(len(v) for v in self._inflight.values())

    def keys(self) -> list[str]:
        return list(self._inflight)
