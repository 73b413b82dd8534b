"""`open_store(url)`: the store a `store.url` names."""

from __future__ import annotations

import time

from .memory import MemoryStore
from .protocol import Clock, Store


def open_store(url: str, clock: Clock = time.time) -> Store:
    """MemoryStore for ``memory://``; RedisStore for ``redis://``, ``rediss://`` and ``redis+sentinel://``."""
    if url.startswith("memory://"):
        return MemoryStore(clock)
    if url.startswith(("redis://", "rediss://", "redis+sentinel://")):
        from .redis import RedisStore  # imported here: the embedded default needs no redis client

        return RedisStore(url, clock=clock)
    raise ValueError(f"unsupported store URL {url!r}: expected memory://, redis://, rediss:// or redis+sentinel://")
