"""Python client for the invalidator cache-invalidation push server.

:class:`CacheClient` keeps a local cache coherent with the server over its WebSocket protocol
(``GET /ws``): subscriptions, one-shot key tracking with tags, resume after reconnects, resets,
soft invalidation and a fill guard against the stale-set race.
"""

from .cache import CacheEntry, LocalCache, LRUCache
from .client import (
    CacheClient,
    ClientClosed,
    ClientError,
    ConnectError,
    NotConnected,
    RequestTimeout,
    ServerError,
    Status,
)
from .fill import FillGuard, FillToken
from .patterns import Pattern, PatternError, PatternType, compile_pattern, event_matcher, infer_type

__version__ = "0.1.0"

__all__ = [
    "CacheClient",
    "Status",
    "ClientError",
    "ConnectError",
    "NotConnected",
    "ServerError",
    "RequestTimeout",
    "ClientClosed",
    "CacheEntry",
    "LocalCache",
    "LRUCache",
    "FillGuard",
    "FillToken",
    "Pattern",
    "PatternError",
    "PatternType",
    "compile_pattern",
    "event_matcher",
    "infer_type",
]
