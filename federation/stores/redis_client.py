"""The redis-py client a Redis store talks through, and the errors that mean "Redis is away"."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .redis_url import RedisTarget

# Errors that mean "Redis is not there right now": no connection (refused, reset, a
# Sentinel with no master: MasterNotFoundError, a server still loading: BusyLoadingError,
# all ConnectionErrors), no answer in time, or a former master turned read-only replica
# after a fail-over. Anything else Redis answers (a ResponseError from a script, WRONGTYPE,
# a DataError) is not an outage but a bug or a broken store: it must not look like one.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError, asyncio.TimeoutError)


def make_client(target: RedisTarget, connect_timeout: float) -> tuple[aioredis.Redis, Sentinel | None]:
    """A client of the server (the Sentinel-managed master) `target` names, and the Sentinel if any."""
    common: dict[str, Any] = dict(
        # No socket timeout (redis-py 8 sets 5 s unless told None): with one, redis-py
        # writes every command through asyncio.wait_for, which loses cancellations on
        # Python 3.11 (hub.tasks). The store bounds each call instead.
        socket_timeout=None,
        socket_connect_timeout=connect_timeout,
        # One quick retry on a fresh connection (a pooled connection may be stale after
        # a Redis restart); timeouts are not retried: the fallback answers instead.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        decode_responses=True,
        health_check_interval=0,
    )
    if target.kind != "sentinel":
        return aioredis.Redis.from_url(target.url, **common), None
    sentinel_kwargs: dict[str, Any] = dict(socket_timeout=None, socket_connect_timeout=connect_timeout,
                                           retry=Retry(NoBackoff(), 0))
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(target.service, db=target.db, username=target.username, password=target.password,
                               ssl=target.ssl, **common), sentinel
