"""Where reports go: the member's report key in the federation's Redis, and its learned specs."""

from __future__ import annotations

import contextlib
from typing import Any, Mapping

from ..report import report_key
from ..tasks import time_limit

SPECS_KEY_PREFIX = "binderfed:agent-specs:"


class RedisOutbox:
    """Where the agent's reports go: one Redis key per member (`hub.report.report_key`)."""

    def __init__(self, url: str, member: str, timeout: float = 5.0):
        import redis.asyncio as redis

        self.member = member
        # No socket timeout for redis-py (its default is 5 s): with one it writes every
        # command through asyncio.wait_for, which loses cancellations on Python 3.11
        # (hub.tasks). Each call is bounded here with asyncio.timeout instead.
        self.timeout = timeout
        self.redis = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=5,
                                          health_check_interval=30)

    def _bounded(self) -> contextlib.AbstractAsyncContextManager[None]:
        return time_limit(self.timeout, "Redis")

    async def publish(self, sealed: str, ttl: int) -> None:
        async with self._bounded():
            await self.redis.set(report_key(self.member), sealed, ex=ttl)

    async def load_specs(self) -> dict[Any, Any]:
        async with self._bounded():
            return await self.redis.hgetall(SPECS_KEY_PREFIX + self.member)

    async def save_specs(self, write: Mapping[str, str], forget: list[str]) -> None:
        key = SPECS_KEY_PREFIX + self.member
        async with self._bounded():
            if write:
                await self.redis.hset(key, mapping=dict(write))
            if forget:
                await self.redis.hdel(key, *forget)

    async def close(self) -> None:
        await self.redis.aclose()
