"""The distributed store: router state shared by many replicas through Redis.

URLs
----
``redis://[[user]:password@]host[:port][/db]``
    A single Redis server (any URL `redis.asyncio.Redis.from_url` accepts).
``rediss://...``
    The same over TLS.
``redis+sentinel://[[user:]password@]host[:port][,host2[:port2]...]/service_name[/db]``
    Redis Sentinel. The hosts are sentinels (default port 26379); ``service_name`` is the
    monitored master's name, and the store always talks to the current master
    (`redis.asyncio.sentinel.Sentinel(...).master_for(service_name)`), following fail-overs.
    The password (and user) authenticate to the master. Query parameters:
    ``sentinel_password`` (sentinels that require their own password) and ``ssl=true``
    (TLS to the master). Example:
    ``redis+sentinel://s3cret@10.0.0.1:26379,10.0.0.2:26379/binderfed/0``.

Keys (all under `key_prefix`, default ``binderfed:``)
----------------------------------------------------
==========================  =======  ==================================================
``status``                  hash     member -> MemberStatus JSON
``override``                hash     member -> Override JSON
``ejection``                hash     member -> ejected until (unix time)
``inflight-members``        set      members that may have launches in flight
``inflight:<member>``       zset     launch id -> expiry time
``image:<repo key>``        zset     member -> expiry time of the cached image
``images``                  zset     "<repo key>\\0<member>" -> expiry time (cache_size)
``launches``                stream   launch events, field ``e`` = event JSON
``rate:<key>``              hash     fixed rate-limit window: ``s`` start, ``c`` count
``repo-inflight:<repo key>``  zset   launch id -> expiry time (launches of one repository)
``lease:<name>``            hash     ``h`` holder, ``e`` expiry time
``launch-minute:<minute>``  string   launches recorded in that clock minute (unix time // 60), kept 2 h
``versions``                hash     change counters ``status``, ``override``, ``ejection``, ``inflight``; ``epoch``
==========================  =======  ==================================================

Time
----
Every expiry (in-flight launches, images, rate windows, leases) is a score or field
computed with the injected `clock`, which for routers is the host's NTP-synced
``time.time``; Redis server time is never used for a decision, so a store behaves the
same as `MemoryStore` under a test's fake clock. Redis key TTLs exist only to
garbage-collect keys nobody reads any more; they are the logical lifetime plus
`GC_MARGIN` seconds, so they never cut a live entry short while clocks agree within a
minute.

Round trips
-----------
A launch costs one round trip: `record_launch`, one ``EVALSHA``. `launch_state(repo_key)`
is answered from a local snapshot (`federation.store_snapshot`, see "Freshness"), so it
sends nothing, except for a repository whose image holders were not read in the last
`holders_ttl` seconds: then one ``EVALSHA`` reads them. The record script adds the launch
to its member's sorted set and the event to the stream, unless `limit` live launches of
that member are already there (the check and the count are one atomic step, so replicas
whose snapshots are behind cannot overfill a member together), and to its repository's
sorted set when it carries a ``repo_key``, unless `repo_cap` launches of that repository
are live there already (the repository's cap, checked in the same step). Its answer
carries what it saw: the member's live launches (this one included), the in-flight change
counter, and the image holders of the launch's repository (the event's ``repo_key``), all
kept in the snapshot; a launch refused because its member filled up is placed again on a
snapshot that knows it. `launch_state(None)` (the status page, the members and admin
API: a view without a repository) reads Redis first, one ``EVALSHA``, so what people read
is current. `limit_launch` (the abuse limits, `router.limits`, only when a rate limit is
set) is one more: it counts the launch against every rate-limit window (and can read a
repository's in-flight count) in one script. `put_statuses` (the prober, once per tick)
is one script for the whole tick. Every other method is one round trip as well (a script
or a transaction pipeline), except `recent_launches`, which pages through the stream.
`launches_per_minute` (the status page) is one ``MGET`` of the per-minute counters
`record_launch` increments, whatever the number of launches.
Scripts use keys derived from their arguments, so they need a single Redis (or a
Sentinel-managed master), not Redis Cluster.

Freshness
---------
What a launch reads may lag behind what other replicas wrote, by at most:

* statuses (the prober's), overrides, ejections and other replicas' in-flight launches:
  one `refresh_period` (0.1 s) plus the refresh's own round trip (under `op_timeout`).
  A background service reads them every `refresh_period`; statuses, overrides and
  ejections come back only when their change counter (``versions`` hash, bumped by every
  write of a store) moved, and whole every `full_refresh` (2 s) for writers that do not
  count (a hand edit in redis-cli);
* image holders: `holders_ttl` (5 s) for a repository this replica has not launched
  since; a launch of the repository refreshes them at once (its record answer);
* this replica's own writes, and what its record steps saw: none, they are applied
  locally at once (own launches expire on time here too).

`freshness_bound` is the larger of the two bounds. Capacity never depends on it: the
member's room (`limit`) and the repository's cap are checked in the atomic record step.
A change counter that goes backwards (Redis restarted empty, a flush) is noticed by the
``epoch`` field the refresh keeps, and the next read is whole.

`cache_size` is a ZREMRANGEBYSCORE + ZCARD of the ``images`` index: O(log N) plus
the entries that have just expired, which `learn_image` also trims as it goes.

The launch log is ``XADD MAXLEN ~ log_length``; entry ids are the event's own
``timestamp`` in milliseconds (raised to the stream's last id when a replica's event is
slightly older than the newest one), so `recent_launches(since)` is an ``XRANGE`` from
``since`` plus an exact filter on ``timestamp``.

Degradation
-----------
When Redis cannot be reached (connection refused or reset, no answer in time, a
Sentinel with no master, a server still loading its data, a read-only former master)
the store never raises; no call waits longer than ``socket_timeout + connect_timeout``
(1 s by default) for Redis. That bound is the store's own `asyncio.timeout` around each
call: redis-py is given only the connect timeout, because with a socket timeout it
writes every command through `asyncio.wait_for`, which loses cancellations on Python
3.11 (see `hub.tasks`). It sets
``degraded = True``, logs ``store degraded: redis unreachable at ...`` once, and answers
from an internal `MemoryStore` that mirrors what this replica last read and wrote: the
last snapshot of statuses, overrides and ejections, the image holders it read or learned,
its own in-flight launches and its own launch events (a `record_launch` limit then holds
against this replica's own launches only). While degraded, calls do not touch
Redis at all; a background service (`hub.tasks.BackgroundService`) retries (``PING``)
with exponential back-off from `backoff_initial` up to `backoff_max` seconds. Leases are granted while degraded, so
every replica probes members itself. Rate-limit windows are counted locally.

On reconnection, what this replica wrote while degraded is pushed back in one atomic
script (launch events beyond `PUSH_CHUNK` follow in further ones) before ``degraded``
turns False and ``store recovered`` is logged:

* in-flight launches that are still live (same launch ids, so a repeated push is harmless),
  minus those settled locally meanwhile;
* learned images (an entry's expiry only ever moves forward);
* statuses, if newer (``checked_at``) than the one in Redis: every replica probed while
  degraded and the leader overwrites them at its next probe anyway;
* overrides set or cleared, if newer (``at``) than the one in Redis (an admin's change
  made during the outage is not lost);
* ejections (the later ``until`` wins);
* launch events (bounded by `log_length`).

Any other failure of a call (Redis answers an error: a script's ``ResponseError``, a key
of the wrong type; or an answer that cannot be read) is not an outage: it is logged as
an error naming the call and the cause, counted (`errors`, `on_error`: the router's
``federation_store_errors_total``), and that one call is answered from the local store;
the store stays in normal operation and the next call goes to Redis again.

Launches recorded before the outage are not pushed again: Redis may have settled some of
them meanwhile (on another replica's probe), and re-adding those would overcount. Rate-limit
counters, per-repository in-flight launches and leases are not pushed back: they are
short-lived by nature, and while degraded each replica enforces the limits alone.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub.tasks import Backoff, BackgroundService

from .members import MemberStatus, Override
from .store_snapshot import KINDS, Snapshot
from .store import (COUNTED, MEMBER_FULL, MINUTES_KEPT, REPO_CAP, Clock, LaunchState, LimitState, MemoryStore,
                    RateCheck, RecordResult, Store, event_minute)

log = logging.getLogger("binderfed.store")

T = TypeVar("T")

REFRESH_PERIOD = 0.1      # seconds between two refreshes of the local snapshot
FULL_REFRESH = 2.0        # seconds between two whole reads of statuses, overrides and ejections
HOLDERS_TTL = 5.0         # seconds a repository's image holders are kept without a read
GC_MARGIN = 60.0          # seconds a key outlives its logical expiry (garbage collection only)
SENTINEL_PORT = 26379
RANGE_PAGE = 5000         # stream entries per XRANGE in recent_launches
PUSH_CHUNK = 1000         # launch events per script when pushing back after an outage
JOURNAL_PRUNE = 10_000    # prune expired launches from the degraded-mode journal past this size

# Errors that mean "Redis is not there right now": no connection (refused, reset, a
# Sentinel with no master: MasterNotFoundError, a server still loading: BusyLoadingError,
# all ConnectionErrors), no answer in time, or a former master turned read-only replica
# after a fail-over. Anything else Redis answers (a ResponseError from a script, WRONGTYPE,
# a DataError) is not an outage but a bug or a broken store: it must not look like one.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError, asyncio.TimeoutError)


# --------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RedisTarget:
    """Where a store URL points."""

    kind: str                                   # "redis" | "rediss" | "sentinel"
    url: str = ""                               # for redis/rediss: the URL itself
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False

    def describe(self) -> str:
        """The URL without credentials, for logs."""
        if self.kind == "sentinel":
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"redis+sentinel://{hosts}/{self.service}/{self.db}"
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return f"{parts.scheme}://{netloc}{parts.path}"


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"empty host in {text!r}")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a store URL (see the module docstring); raises ValueError naming what is wrong."""
    if url.startswith(("redis://", "rediss://")):
        parts = urlsplit(url)
        if not parts.hostname and not parts.path.startswith("/"):
            raise ValueError(f"store URL {url!r}: expected redis://host[:port][/db]")
        db_text = parts.path.strip("/") or "0"
        if not db_text.isdigit():
            raise ValueError(f"store URL {url!r}: database must be a number, got {db_text!r}")
        return RedisTarget(kind="rediss" if parts.scheme == "rediss" else "redis", url=url, db=int(db_text),
                           username=unquote(parts.username) if parts.username else None,
                           password=unquote(parts.password) if parts.password else None,
                           ssl=parts.scheme == "rediss")
    if not url.startswith("redis+sentinel://"):
        raise ValueError(f"store URL {url!r}: expected redis://, rediss:// or redis+sentinel://")
    rest = url[len("redis+sentinel://"):]
    rest, _, query = rest.partition("?")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        userinfo, hostpart = "", rest
    username = password = None
    if userinfo:
        if ":" in userinfo:
            user, _, pw = userinfo.partition(":")
            username, password = (unquote(user) or None), unquote(pw)
        else:
            password = unquote(userinfo)
    hosts, _, path = hostpart.partition("/")
    segments = [s for s in path.split("/") if s]
    if not hosts:
        raise ValueError(f"store URL {url!r}: no sentinel host (redis+sentinel://host:port[,host:port]/service[/db])")
    if not segments:
        raise ValueError(f"store URL {url!r}: no service name (redis+sentinel://host:port[,host:port]/service[/db])")
    if len(segments) > 2:
        raise ValueError(f"store URL {url!r}: too many path segments, expected /service[/db]")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError(f"store URL {url!r}: database must be a number, got {segments[1]!r}")
        db = int(segments[1])
    try:
        sentinels = tuple(_host_port(h, SENTINEL_PORT) for h in hosts.split(",") if h.strip())
    except ValueError as exc:
        raise ValueError(f"store URL {url!r}: {exc}") from None
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    return RedisTarget(kind="sentinel", sentinels=sentinels, service=unquote(segments[0]), db=db,
                       username=username, password=password,
                       sentinel_password=params.get("sentinel_password"),
                       ssl=params.get("ssl", "").lower() in ("1", "true", "yes"))


# --------------------------------------------------------------------------------------
# Lua scripts (each is one EVALSHA, run atomically by Redis)
# --------------------------------------------------------------------------------------
# The refresh of the local snapshot (federation.store_snapshot).
# KEYS: status, override, ejection, inflight-members, versions
# ARGV: now, inflight key prefix, the status, override and ejection versions held ('' = none),
#       a new epoch
# Returns JSON: {versions (status, override, ejection, inflight, epoch), each hash or false
# when its version is the one held, in-flight counts as member, n pairs}. The epoch names
# this run of Redis's data: an emptied or restarted Redis counts versions from 0 again.
SNAPSHOT = """
local v = redis.call('HMGET', KEYS[5], 'status', 'override', 'ejection', 'inflight', 'epoch')
local versions = {}
for i = 1, 4 do versions[i] = v[i] or '0' end
if not v[5] then redis.call('HSET', KEYS[5], 'epoch', ARGV[6]) end
versions[5] = v[5] or ARGV[6]
local function part(i)
  if ARGV[2 + i] == versions[i] then return false end
  return redis.call('HGETALL', KEYS[i])
end
local counts = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  local k = ARGV[2] .. m
  redis.call('ZREMRANGEBYSCORE', k, '-inf', ARGV[1])
  local n = redis.call('ZCARD', k)
  if n == 0 then redis.call('SREM', KEYS[4], m) else counts[#counts + 1] = m; counts[#counts + 1] = n end
end
-- One JSON string rather than nested arrays: one bulk reply parses much faster client-side.
return cjson.encode({versions, part(1), part(2), part(3), counts})
"""

# KEYS: inflight-members   ARGV: now, inflight key prefix
IN_FLIGHT = """
local counts = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = ARGV[2] .. m
  redis.call('ZREMRANGEBYSCORE', k, '-inf', ARGV[1])
  local n = redis.call('ZCARD', k)
  if n == 0 then redis.call('SREM', KEYS[1], m) else counts[#counts + 1] = m; counts[#counts + 1] = n end
end
return counts
"""

# Shared by RECORD_LAUNCH and PUSH: append one event, its id at least the stream's last id.
_XADD_FUNCTION = """
local function add_event(stream, ts_ms, payload, maxlen)
  local ms = tonumber(ts_ms) or 0
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if last[1] then
    local last_ms = tonumber(string.match(last[1][1], '^(%d+)'))
    if last_ms and last_ms > ms then ms = last_ms end
  end
  local ok = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, string.format('%.0f', ms) .. '-*', 'e', payload)
  if type(ok) == 'table' and ok.err then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', payload)
  end
end
"""

# A key's garbage-collection TTL only ever grows.
_EXTEND_TTL_FUNCTION = """
local function extend_ttl(key, ms)
  if redis.call('PTTL', key) < tonumber(ms) then redis.call('PEXPIRE', key, ms) end
end
"""

# KEYS: inflight:<member>, inflight-members, launches, launch-minute:<minute>, versions, image:<repo>
#       [, repo-inflight:<repo key>]
# ARGV: member, launch id, expiry, gc ttl ms, event JSON ('' = none), event ms, maxlen,
#       limit ('' = none), now, minute counter gc ttl ms, read holders ('' = no)
#       [, repo expiry, repo gc ttl ms, repo cap ('' = none)]
# Returns {code, the member's live launches (-1: not read), the in-flight version, the
# holders of image:<repo> (member, expiry pairs), the repository's launches}: code 1 when
# recorded; 0 (nothing recorded) when `limit` launches of the member are already in
# flight; 2 when `repo cap` launches of the repository are.
RECORD_LAUNCH = _XADD_FUNCTION + _EXTEND_TTL_FUNCTION + """
local function reply(code, count, repo_n)
  local holders = {}
  if ARGV[11] ~= '' then
    redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', ARGV[9])
    holders = redis.call('ZRANGE', KEYS[6], 0, -1, 'WITHSCORES')
  end
  return {code, count, redis.call('HGET', KEYS[5], 'inflight') or '0', holders, repo_n}
end
if KEYS[7] then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', ARGV[9])
  if ARGV[14] ~= '' then
    local running = redis.call('ZCARD', KEYS[7])
    if running >= tonumber(ARGV[14]) then return reply(2, -1, running) end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[9])
if ARGV[8] ~= '' then
  local n = redis.call('ZCARD', KEYS[1])
  if n >= tonumber(ARGV[8]) then return reply(0, n, 0) end
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[5], 'inflight', 1)
extend_ttl(KEYS[1], ARGV[4])
if ARGV[5] ~= '' then
  add_event(KEYS[3], ARGV[6], ARGV[5], ARGV[7])
  redis.call('INCR', KEYS[4])
  redis.call('PEXPIRE', KEYS[4], ARGV[10])
end
if KEYS[7] then
  redis.call('ZADD', KEYS[7], ARGV[12], ARGV[2])
  extend_ttl(KEYS[7], ARGV[13])
end
return reply(1, redis.call('ZCARD', KEYS[1]), 0)
"""

# KEYS: inflight:<member>, inflight-members, versions   ARGV: now, count, member
SETTLE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = tonumber(ARGV[2])
if n > 0 then redis.call('ZPOPMIN', KEYS[1], n); redis.call('HINCRBY', KEYS[3], 'inflight', 1) end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end
return 1
"""

# One probe tick's writes. KEYS: status, inflight-members, versions
# ARGV: now, inflight key prefix, n, then n pairs (member, status JSON), then pairs (member, pods seen)
# Returns the status version.
PUT_STATUSES = """
local n = tonumber(ARGV[3])
if 4 + 2 * n <= #ARGV then redis.call('HINCRBY', KEYS[3], 'inflight', 1) end
for i = 0, n - 1 do redis.call('HSET', KEYS[1], ARGV[4 + 2 * i], ARGV[5 + 2 * i]) end
for i = 4 + 2 * n, #ARGV, 2 do
  local m, k = ARGV[i], ARGV[2] .. ARGV[i]
  redis.call('ZREMRANGEBYSCORE', k, '-inf', ARGV[1])
  local seen = tonumber(ARGV[i + 1])
  if seen > 0 then redis.call('ZPOPMIN', k, seen) end
  if redis.call('ZCARD', k) == 0 then redis.call('SREM', KEYS[2], m) end
end
return redis.call('HINCRBY', KEYS[3], 'status', 1)
"""

# KEYS: image:<repo>, images   ARGV: member, expiry, index member, now, gc ttl ms
LEARN_IMAGE = _EXTEND_TTL_FUNCTION + """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
extend_ttl(KEYS[1], ARGV[5])
return 1
"""

# KEYS: image:<repo>   ARGV: now
HOLDERS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
"""

# One hit on a fixed window: returns count, window start (the start as a string: Lua
# numbers come back to the client truncated to integers).
_HIT_FUNCTION = """
local function hit(key, now_text, window, gc_ms)
  local start = redis.call('HGET', key, 's')
  local count
  if (not start) or tonumber(now_text) - tonumber(start) >= tonumber(window) then
    start = now_text
    count = 1
    redis.call('HSET', key, 's', start, 'c', 1)
  else
    count = redis.call('HINCRBY', key, 'c', 1)
  end
  redis.call('PEXPIRE', key, gc_ms)
  return count, start
end
"""

# KEYS: rate:<key>   ARGV: now, window, gc ttl ms
# Returns {count, window start}.
HIT = _HIT_FUNCTION + """
local count, start = hit(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
return {count, start}
"""

# KEYS: rate:<key 1> .. rate:<key n>[, repo-inflight:<repo key>]
# ARGV: now, n, then per rate: limit, window, gc ttl ms
# Returns {index of the first rate over its limit (0-based, -1: none), its window start, repo in flight}.
LIMIT_LAUNCH = _HIT_FUNCTION + """
local n = tonumber(ARGV[2])
local refused, refused_start = -1, ''
for i = 1, n do
  local count, start = hit(KEYS[i], ARGV[1], ARGV[3 * i + 1], ARGV[3 * i + 2])
  if count > tonumber(ARGV[3 * i]) then
    refused, refused_start = i - 1, start
    break
  end
end
local in_flight = 0
if KEYS[n + 1] then
  redis.call('ZREMRANGEBYSCORE', KEYS[n + 1], '-inf', ARGV[1])
  in_flight = redis.call('ZCARD', KEYS[n + 1])
end
return {refused, refused_start, in_flight}
"""

# KEYS: lease:<name>   ARGV: holder, now, expiry, gc ttl ms
ACQUIRE = """
local current = redis.call('HMGET', KEYS[1], 'h', 'e')
if (not current[1]) or current[1] == ARGV[1] or tonumber(current[2]) <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'h', ARGV[1], 'e', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
"""

# KEYS: lease:<name>   ARGV: holder
RELEASE = """
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# What a replica wrote while degraded, in one go (see "Degradation" in the module docstring).
# KEYS: status, override, ejection, inflight-members, launches, images
# ARGV: payload JSON, key prefix, now, maxlen, gc margin ms, minute counter gc ttl ms
PUSH = _XADD_FUNCTION + _EXTEND_TTL_FUNCTION + """
local p = cjson.decode(ARGV[1])
local prefix = ARGV[2]
local now = tonumber(ARGV[3])
local margin = tonumber(ARGV[5])
local function field_of(hash, name, key)
  local raw = redis.call('HGET', hash, name)
  if not raw then return nil end
  local ok, value = pcall(cjson.decode, raw)
  if ok and type(value) == 'table' then return tonumber(value[key]) or 0 end
  return 0
end
for _, s in ipairs(p.statuses) do
  local current = field_of(KEYS[1], s[1], 'checked_at')
  if (not current) or current <= tonumber(s[3]) then redis.call('HSET', KEYS[1], s[1], s[2]) end
end
for _, o in ipairs(p.overrides) do
  local current = field_of(KEYS[2], o[1], 'at')
  if (not current) or current <= tonumber(o[3]) then
    if o[2] == '' then redis.call('HDEL', KEYS[2], o[1]) else redis.call('HSET', KEYS[2], o[1], o[2]) end
  end
end
for _, e in ipairs(p.ejections) do
  local current = tonumber(redis.call('HGET', KEYS[3], e[1]))
  if (not current) or current < tonumber(e[2]) then redis.call('HSET', KEYS[3], e[1], e[2]) end
end
for _, l in ipairs(p.launches) do
  local key = prefix .. 'inflight:' .. l[1]
  redis.call('ZADD', key, l[3], l[2])
  redis.call('SADD', KEYS[4], l[1])
  extend_ttl(key, math.ceil((tonumber(l[3]) - now + margin) * 1000))
end
for _, i in ipairs(p.images) do
  local key = prefix .. 'image:' .. i[1]
  redis.call('ZADD', key, 'GT', i[3], i[2])
  redis.call('ZADD', KEYS[6], 'GT', i[3], i[1] .. '\\0' .. i[2])
  extend_ttl(key, math.ceil((tonumber(i[3]) - now + margin) * 1000))
end
for _, kind in ipairs({'status', 'override', 'ejection', 'inflight'}) do
  redis.call('HINCRBY', ARGV[2] .. 'versions', kind, 1)
end
for _, e in ipairs(p.events) do
  add_event(KEYS[5], e[1], e[2], ARGV[4])
  local key = prefix .. 'launch-minute:' .. e[3]
  redis.call('INCR', key)
  redis.call('PEXPIRE', key, ARGV[6])
end
return 1
"""


# --------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------
@dataclass
class _Journal:
    """What this replica wrote while degraded, to push back on recovery."""

    statuses: dict[str, MemberStatus] = field(default_factory=dict)
    overrides: dict[str, tuple[Override | None, float]] = field(default_factory=dict)  # (override, when)
    ejections: dict[str, float] = field(default_factory=dict)
    launches: list[tuple[str, str, float]] = field(default_factory=list)   # (member, launch id, expiry)
    images: dict[tuple[str, str], float] = field(default_factory=dict)     # (repo, member) -> expiry
    events: collections.deque[tuple[int, str]] = field(default_factory=collections.deque)  # (ms, JSON)

    def empty(self) -> bool:
        return not (self.statuses or self.overrides or self.ejections or self.launches or self.images
                    or self.events)

    def merge_older(self, older: "_Journal") -> None:
        """Put back a journal whose push failed, under what was written since."""
        for name, status in older.statuses.items():
            self.statuses.setdefault(name, status)
        for name, override in older.overrides.items():
            self.overrides.setdefault(name, override)
        for name, until in older.ejections.items():
            self.ejections[name] = max(until, self.ejections.get(name, until))
        self.launches[:0] = older.launches
        for key, expiry in older.images.items():
            self.images[key] = max(expiry, self.images.get(key, expiry))
        maxlen = self.events.maxlen
        self.events = collections.deque([*older.events, *self.events], maxlen=maxlen)


_UNREADABLE = object()


def _pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
    return list(zip(flat[0::2], flat[1::2]))


def _describe_error(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or ("no answer in time" if isinstance(exc, TimeoutError) else "")
    if len(text) > limit:  # some redis errors embed the whole client's repr
        text = text[:limit] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _event_ms(event: Mapping[str, Any]) -> int:
    try:
        ts = float(event.get("timestamp", 0) or 0)
    except (TypeError, ValueError):
        return 0
    return max(0, math.floor(ts * 1000)) if math.isfinite(ts) else 0


class _Reconnector(BackgroundService):
    """While a store is degraded: PING with exponential backoff, push back what was
    written meanwhile, turn the store back to normal and end."""

    def __init__(self, store: "RedisStore") -> None:
        super().__init__("redis-store-reconnect")
        self.store = store

    async def run(self) -> None:
        store = self.store
        backoff = Backoff(store.backoff_initial, store.backoff_max)
        delay = backoff.next()
        while await self.pause(delay):
            try:
                async with asyncio.timeout(store.op_timeout):
                    await store._redis.ping()
                await store._push_journal()
                async with asyncio.timeout(store.op_timeout):
                    await store._refresh(whole=True)   # launches read Redis's state again, not the outage's
                await store._push_journal()            # what was written meanwhile (usually nothing)
            except UNREACHABLE as exc:
                store.last_error = _describe_error(exc)
                delay = backoff.next()
                log.debug("store still degraded (%s); next attempt in %.1f s", store.last_error, delay)
                continue
            except Exception as exc:  # noqa: BLE001 - Redis is back but refuses the push: a bug
                store._failed(store._push_journal, exc)
                log.error("dropping what this replica wrote while redis was away: it cannot be pushed back")
                store._journal = store._new_journal()
            # No await between the journal's last push and this line: nothing written
            # while degraded can be left behind.
            store._recovered()
            return


class _Refresher(BackgroundService):
    """Keeps a store's local snapshot fresh: one read every `refresh_period` seconds."""

    def __init__(self, store: "RedisStore") -> None:
        super().__init__("redis-store-refresh")
        self.store = store

    async def run(self) -> None:
        store = self.store
        while await self.pause(store.refresh_period):
            if store.degraded:
                continue  # the reconnector brings it back; the fallback answers meanwhile

            async def refresh() -> None:
                await store._refresh(whole=time.monotonic() - store._full_at >= store.full_refresh)

            await store._call(refresh, store._nothing)


class RedisStore(Store):
    """Router state shared by replicas through Redis, degrading to local memory when it is away."""

    def __init__(self, url: str, clock: Clock = time.time, key_prefix: str = "binderfed:",
                 log_length: int = 100_000, *, socket_timeout: float = 0.5, connect_timeout: float = 0.5,
                 backoff_initial: float = 0.5, backoff_max: float = 10.0, refresh_period: float = REFRESH_PERIOD,
                 full_refresh: float = FULL_REFRESH, holders_ttl: float = HOLDERS_TTL):
        super().__init__(clock)
        self.target = parse_redis_url(url)
        self.key_prefix = key_prefix
        self.log_length = log_length
        self.socket_timeout = socket_timeout    # for the answer, once connected
        self.connect_timeout = connect_timeout  # for a new connection (redis-py enforces this one)
        # A call never waits longer than this for Redis (connecting included): the bound
        # every call gets from `_call`, whatever the client library does.
        self.op_timeout = socket_timeout + connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.degraded = False
        self.last_error: str = ""
        self.errors = 0                                   # calls failed by something other than an outage
        self.on_error: Callable[[], None] | None = None   # told of each (the router counts them)
        self._fallback = MemoryStore(clock, log_length=min(log_length, 10_000))
        self._journal = self._new_journal()
        self._reconnector = _Reconnector(self)
        self.refresh_period = refresh_period   # the local snapshot's refresh (module docstring, "Freshness")
        self.full_refresh = full_refresh
        self._snap = Snapshot(holders_ttl)
        # Statuses, overrides, ejections and in-flight counts within a refresh (plus the
        # read's own time, at most op_timeout); image holders within holders_ttl.
        self.freshness_bound = max(refresh_period + self.op_timeout, holders_ttl)
        self._full_at = 0.0                    # monotonic time of the last whole read
        self._refresher = _Refresher(self)
        self._closed = False
        self._sentinel: Sentinel | None = None
        self._decoded: dict[str, dict[str, tuple[str, Any]]] = {}   # kind -> member -> (raw, object)
        self._changed: dict[str, bool] = {}  # kind -> whether its last decode found anything new
        self._redis = self._make_client()
        p = key_prefix
        self._k_status, self._k_override, self._k_ejection = p + "status", p + "override", p + "ejection"
        self._k_inflight_members, self._k_inflight = p + "inflight-members", p + "inflight:"
        self._k_image, self._k_images = p + "image:", p + "images"
        self._k_launches, self._k_rate, self._k_lease = p + "launches", p + "rate:", p + "lease:"
        self._k_repo_inflight = p + "repo-inflight:"
        self._k_minute = p + "launch-minute:"
        self._k_versions = p + "versions"
        r = self._redis
        self._snapshot = r.register_script(SNAPSHOT)
        self._in_flight = r.register_script(IN_FLIGHT)
        self._record_launch = r.register_script(RECORD_LAUNCH)
        self._settle = r.register_script(SETTLE)
        self._put_statuses = r.register_script(PUT_STATUSES)
        self._learn_image = r.register_script(LEARN_IMAGE)
        self._holders = r.register_script(HOLDERS)
        self._hit = r.register_script(HIT)
        self._limit_launch = r.register_script(LIMIT_LAUNCH)
        self._acquire = r.register_script(ACQUIRE)
        self._release = r.register_script(RELEASE)
        self._push = r.register_script(PUSH)
        self._scripts = [self._snapshot, self._in_flight, self._record_launch, self._settle, self._put_statuses,
                         self._learn_image, self._holders, self._hit, self._limit_launch, self._acquire, self._release,
                         self._push]

    def _new_journal(self) -> _Journal:
        return _Journal(events=collections.deque(maxlen=self.log_length))

    def _make_client(self) -> aioredis.Redis:
        common: dict[str, Any] = dict(
            # No socket timeout (redis-py 8 sets 5 s unless told None): with one, redis-py
            # writes every command through asyncio.wait_for, which loses cancellations on
            # Python 3.11 (hub.tasks). `_call` bounds each call instead.
            socket_timeout=None,
            socket_connect_timeout=self.connect_timeout,
            # One quick retry on a fresh connection (a pooled connection may be stale after
            # a Redis restart); timeouts are not retried: the fallback answers instead.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            decode_responses=True,
            health_check_interval=0,
        )
        t = self.target
        if t.kind != "sentinel":
            return aioredis.Redis.from_url(t.url, **common)
        sentinel_kwargs: dict[str, Any] = dict(socket_timeout=None, socket_connect_timeout=self.connect_timeout,
                                               retry=Retry(NoBackoff(), 0))
        if t.sentinel_password:
            sentinel_kwargs["password"] = t.sentinel_password
        self._sentinel = Sentinel(list(t.sentinels), sentinel_kwargs=sentinel_kwargs)
        return self._sentinel.master_for(t.service, db=t.db, username=t.username, password=t.password,
                                         ssl=t.ssl, **common)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and load the scripts; if Redis is down, start degraded and keep retrying."""
        self._closed = False
        try:
            async with asyncio.timeout(self.op_timeout * 2):
                await self._redis.ping()
                for script in self._scripts:
                    script.sha = await self._redis.script_load(script.script)
                await self._refresh(whole=True)
        except UNREACHABLE as exc:
            await self._degrade(exc)
        except RedisError as exc:  # Redis answers, but not as a store can use it (ACLs, a proxy): say so, retry
            log.error("redis at %s refused the store's set-up: %s", self.target.describe(), _describe_error(exc))
            await self._degrade(exc)
        await self._refresher.start()

    async def close(self) -> None:
        self._closed = True
        await self._refresher.stop()
        await self._reconnector.stop()
        try:
            await self._redis.aclose()
        except UNREACHABLE:
            pass
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                try:
                    await client.aclose()
                except UNREACHABLE:
                    pass

    # -- degradation -------------------------------------------------------------------
    async def _degrade(self, exc: BaseException) -> None:
        cause = _describe_error(exc)
        self.last_error = cause
        if self.degraded:
            return
        self.degraded = True
        log.warning("store degraded: redis unreachable at %s: %s", self.target.describe(), cause,
                    extra={"store": self.target.describe(), "cause": cause})
        if not self._closed:
            await self._reconnector.start()  # a no-op while it runs

    def _recovered(self) -> None:
        self.degraded = False
        self._changed.clear()  # the next reads mirror Redis whole into the fallback again
        log.info("store recovered: redis reachable again at %s", self.target.describe(),
                 extra={"store": self.target.describe()})

    async def _push_journal(self) -> None:
        """Push what was written while degraded; events go in chunks so no script runs long."""
        while not self._journal.empty():
            journal, self._journal = self._journal, self._new_journal()
            first = True
            while first or journal.events:
                now = self.clock()
                events = [journal.events.popleft() for _ in range(min(PUSH_CHUNK, len(journal.events)))]
                payload: dict[str, list[list[str]]] = {
                    "statuses": [[n, json.dumps(s.to_json()), repr(s.checked_at)]
                                 for n, s in journal.statuses.items()],
                    "overrides": [[n, json.dumps(o.to_json()) if o is not None else "", repr(o.at if o else when)]
                                  for n, (o, when) in journal.overrides.items()],
                    "ejections": [[n, repr(until)] for n, until in journal.ejections.items()],
                    "launches": [[m, i, repr(e)] for m, i, e in journal.launches if e > now],
                    "images": [[r, m, repr(e)] for (r, m), e in journal.images.items() if e > now],
                    "events": [[str(ms), event, str(ms // 60_000)] for ms, event in events],
                }
                try:
                    async with asyncio.timeout(self.op_timeout * 4):
                        await self._push(
                            keys=[self._k_status, self._k_override, self._k_ejection, self._k_inflight_members,
                                  self._k_launches, self._k_images],
                            args=[json.dumps(payload), self.key_prefix, repr(now), self.log_length,
                                  int(GC_MARGIN * 1000), self._gc_ms(MINUTES_KEPT * 60)])
                except BaseException:
                    journal.events.extendleft(reversed(events))
                    self._journal.merge_older(journal)
                    raise
                if first:  # pushed once; only events are left
                    journal.statuses.clear()
                    journal.overrides.clear()
                    journal.ejections.clear()
                    journal.launches.clear()
                    journal.images.clear()
                    first = False

    async def _call(self, remote: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]],
                    journal: Callable[[], None] | None = None) -> T:
        """Run `remote` against Redis, or `local` (and `journal`) when Redis is away.

        A failure that is not Redis being away (see UNREACHABLE) is logged and counted as
        the bug it is, and only this call is answered locally (module docstring)."""
        if not self.degraded:
            try:
                async with asyncio.timeout(self.op_timeout):
                    return await remote()
            except UNREACHABLE as exc:
                await self._degrade(exc)
            except Exception as exc:  # noqa: BLE001 - not an outage: say so loudly, keep serving
                self._failed(remote, exc)
                return await local()
        if journal is not None:
            journal()
        return await local()

    def _failed(self, remote: Callable[..., Any], exc: BaseException) -> None:
        self.errors += 1
        call = getattr(remote, "__qualname__", "a call").replace(".<locals>.remote", "")
        log.error("store error in %s (redis at %s answered, this is not an outage): %s; answered from this "
                  "replica's memory", call, self.target.describe(), _describe_error(exc), exc_info=exc,
                  extra={"store": self.target.describe(), "cause": _describe_error(exc)})
        if self.on_error is not None:
            self.on_error()

    async def _nothing(self) -> None:
        return None

    def _gc_ms(self, ttl: float) -> int:
        return max(1, math.ceil((ttl + GC_MARGIN) * 1000))

    # -- mirroring what was read into the fallback -----------------------------------------
    async def _mirror(self, statuses: Mapping[str, MemberStatus] | None = None,
                      overrides: Mapping[str, Override] | None = None,
                      ejections: Mapping[str, float] | None = None) -> None:
        fb = self._fallback
        if statuses is not None:
            for status in statuses.values():
                await fb.put_status(status)
        if overrides is not None:
            for name in (await fb.overrides()).keys() - overrides.keys():
                await fb.set_override(name, None)
            for name, override in overrides.items():
                await fb.set_override(name, override)
        if ejections is not None:
            for name, until in ejections.items():
                await fb.set_ejection(name, until)

    async def _mirror_holders(self, repo_key: str, scored: list[tuple[str, float]], now: float) -> None:
        fb = self._fallback
        live = {m for m, _ in scored}
        for member in await fb.image_holders(repo_key):
            if member not in live:
                await fb.learn_image(repo_key, member, 0.0)  # expire it locally too
        for member, expiry in scored:
            await fb.learn_image(repo_key, member, expiry - now)

    def _decode(self, kind: str, flat: Any, parse: Callable[[str, str], Any]) -> dict[str, Any]:
        """Decode a hash read from Redis, reusing the objects of entries whose text has not changed
        (statuses change once per probe, launches read them many times a second)."""
        items = flat.items() if isinstance(flat, dict) else _pairs(flat)
        previous = self._decoded.get(kind, {})
        cache: dict[str, tuple[str, Any]] = {}
        out: dict[str, Any] = {}
        changed = False
        for name, raw in items:
            hit = previous.get(name)
            if hit is not None and hit[0] == raw:
                value = hit[1]
            else:
                changed = True
                try:
                    value = parse(name, raw)
                except Exception as exc:  # one bad entry must not stop launches
                    log.warning("ignoring unreadable %s of member %s in redis: %s", kind, name, exc)
                    value = _UNREADABLE  # remembered, so the warning is not repeated on every read
            cache[name] = (raw, value)
            if value is not _UNREADABLE:
                out[name] = value
        self._decoded[kind] = cache
        self._changed[kind] = changed or len(cache) != len(previous)
        return out

    def _if_changed(self, kind: str, value: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """`value`, or None when the last `_decode` of `kind` found nothing new: the
        local fallback holds it already, and mirroring a thousand members on every
        launch would cost more than the launch."""
        return value if self._changed.get(kind, True) else None

    def _decode_statuses(self, flat: Any) -> dict[str, MemberStatus]:
        return self._decode("status", flat, lambda name, raw: MemberStatus.from_json(name, json.loads(raw)))

    def _decode_overrides(self, flat: Any) -> dict[str, Override]:
        return self._decode("override", flat, lambda name, raw: Override.from_json(json.loads(raw)))

    def _decode_ejections(self, flat: Any) -> dict[str, float]:
        return self._decode("ejection", flat, lambda name, raw: float(raw))

    # -- hot path ----------------------------------------------------------------------
    async def _refresh(self, whole: bool) -> None:
        """Read Redis into the snapshot: in-flight counts, and statuses, overrides and
        ejections whose version moved (all three when `whole`). One EVALSHA."""
        snap = self._snap
        now = self.clock()
        known = ["", "", ""] if whole else [str(snap.known[kind]) for kind in KINDS]
        if whole:
            self._full_at = time.monotonic()
        raw = json.loads(await self._snapshot(
            keys=[self._k_status, self._k_override, self._k_ejection, self._k_inflight_members, self._k_versions],
            args=[repr(now), self._k_inflight, *known, uuid.uuid4().hex]))
        if snap.new_epoch(raw[0][4]) and not whole:
            return await self._refresh(whole=True)
        versions = [int(v) for v in raw[0][:4]]
        # cjson encodes an empty Lua table as {}: `or []` turns those back into lists.
        parts = {kind: (None if part is False else part or []) for kind, part in zip(KINDS, raw[1:4])}
        if parts["status"] is not None:
            snap.refreshed("status", versions[0], self._decode_statuses(parts["status"]))
        if parts["override"] is not None:
            snap.refreshed("override", versions[1], self._decode_overrides(parts["override"]))
        if parts["ejection"] is not None:
            snap.refreshed("ejection", versions[2], self._decode_ejections(parts["ejection"]))
        snap.refreshed_counts({m: int(n) for m, n in _pairs(raw[4] or [])}, versions[3], now)
        await self._mirror(*(self._if_changed(kind, snap.parts[kind]) if parts[kind] is not None else None
                             for kind in KINDS))

    # -- hot path ----------------------------------------------------------------------
    async def launch_state(self, repo_key: str | None) -> LaunchState:
        """From the local snapshot (module docstring, "Freshness"): no round trip for a
        launch of a repository whose holders were read in the last `holders_ttl` seconds.
        Without a repository (the status page, the members API) Redis is read first."""
        async def remote() -> LaunchState:
            if repo_key is None:
                await self._refresh(whole=True)
            now = self.clock()
            holders = self._snap.holders(repo_key, now) if repo_key else frozenset()
            if holders is None:  # not read lately: one round trip
                raw = await self._holders(keys=[self._k_image + repo_key], args=[repr(now)])
                scored = [(m, float(s)) for m, s in _pairs(raw)]
                self._snap.set_holders(repo_key, scored)
                await self._mirror_holders(repo_key, scored, now)
                holders = frozenset(m for m, _ in scored)
            parts = self._snap.parts
            return LaunchState(statuses=parts["status"], in_flight=self._snap.in_flight(now),
                               overrides=parts["override"], ejections=parts["ejection"], holders=holders)

        return await self._call(remote, lambda: self._fallback.launch_state(repo_key))

    async def record_launch(self, member: str, ttl: float, event: Mapping[str, Any] | None = None, *,
                            limit: int | None = None, repo_key: str | None = None, repo_ttl: float = 0.0,
                            repo_cap: int | None = None) -> RecordResult:
        launch_id = uuid.uuid4().hex
        now = self.clock()
        expiry = now + ttl
        payload = json.dumps(dict(event), default=str) if event is not None else ""
        ms = _event_ms(event) if event is not None else 0
        capped = repo_cap if repo_key is not None else None

        # The repository whose holders come back with the answer (the event names it when
        # the launch is not counted towards a repository cap).
        repo = repo_key or (event.get("repo_key") if event is not None else None)
        repo = repo if isinstance(repo, str) and repo else None

        async def remote() -> RecordResult:
            minute = event_minute(event, now) if event is not None else int(now // 60)
            keys = [self._k_inflight + member, self._k_inflight_members, self._k_launches,
                    self._k_minute + str(minute), self._k_versions, self._k_image + (repo or "")]
            args = [member, launch_id, repr(expiry), self._gc_ms(ttl), payload, ms, self.log_length,
                    "" if limit is None else int(limit), repr(now), self._gc_ms(MINUTES_KEPT * 60),
                    "1" if repo else ""]
            if repo_key is not None:
                keys.append(self._k_repo_inflight + repo_key)
                args += [repr(now + repo_ttl), self._gc_ms(repo_ttl), "" if capped is None else int(capped)]
            code, count, version, holders, repo_n = await self._record_launch(keys=keys, args=args)
            code, count = int(code), int(count)
            if repo:
                self._snap.set_holders(repo, [(m, float(s)) for m, s in _pairs(holders)])
            if count >= 0:  # what this launch saw of its member, this one included when counted
                self._snap.counted(member, count, int(version), expiry if code == 1 else None)
            if code == 2:
                return RecordResult(False, REPO_CAP, int(repo_n))
            if code == 0:
                return RecordResult(False, MEMBER_FULL)
            # Mirrored, so the fallback knows this replica's launches if Redis goes away.
            await self._fallback.record_launch(member, ttl, event, repo_key=repo_key, repo_ttl=repo_ttl)
            return COUNTED

        async def local() -> RecordResult:
            # Degraded: the limits hold against this replica's own in-flight launches.
            result = await self._fallback.record_launch(member, ttl, event, limit=limit, repo_key=repo_key,
                                                        repo_ttl=repo_ttl, repo_cap=capped)
            if result:
                journal()
            return result

        def journal() -> None:
            launches = self._journal.launches
            launches.append((member, launch_id, expiry))
            if len(launches) > JOURNAL_PRUNE and launches[0][2] <= self.clock():
                now = self.clock()
                self._journal.launches = [entry for entry in launches if entry[2] > now]
            if event is not None:
                self._journal.events.append((ms, payload))

        return await self._call(remote, local)

    # -- member status -------------------------------------------------------------------
    async def put_status(self, status: MemberStatus) -> None:
        await self._fallback.put_status(status)

        async def remote() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._k_status, status.name, json.dumps(status.to_json()))
                pipe.hincrby(self._k_versions, "status", 1)
                _, version = await pipe.execute()
            self._snap.wrote("status", int(version), {status.name: status})

        await self._call(remote, self._nothing, lambda: self._journal.statuses.__setitem__(status.name, status))

    async def put_statuses(self, statuses: Sequence[MemberStatus], settled: Mapping[str, int]) -> None:
        await self._fallback.put_statuses(statuses, settled)
        now = self.clock()

        async def remote() -> None:
            args: list[Any] = [repr(now), self._k_inflight, len(statuses)]
            for status in statuses:
                args += [status.name, json.dumps(status.to_json())]
            for member, seen in settled.items():
                args += [member, max(int(seen), 0)]
            version = await self._put_statuses(keys=[self._k_status, self._k_inflight_members, self._k_versions],
                                               args=args)
            self._snap.wrote("status", int(version), {status.name: status for status in statuses})

        def journal() -> None:
            for status in statuses:
                self._journal.statuses[status.name] = status
            for member, seen in settled.items():
                self._journal_settle(member, seen, now)

        await self._call(remote, self._nothing, journal)

    async def statuses(self) -> dict[str, MemberStatus]:
        async def remote() -> dict[str, MemberStatus]:
            statuses = self._decode_statuses(await self._redis.hgetall(self._k_status))
            await self._mirror(statuses=statuses)
            return statuses

        return await self._call(remote, self._fallback.statuses)

    async def settle_in_flight(self, member: str, seen: int) -> None:
        await self._fallback.settle_in_flight(member, seen)
        now = self.clock()

        async def remote() -> None:
            await self._settle(keys=[self._k_inflight + member, self._k_inflight_members, self._k_versions],
                               args=[repr(now), max(int(seen), 0), member])

        await self._call(remote, self._nothing, lambda: self._journal_settle(member, seen, now))

    def _journal_settle(self, member: str, seen: int, now: float) -> None:
        # Forget the same launches locally: the oldest live ones of this member.
        launches = self._journal.launches
        mine = sorted((e, i) for i, (m, _, e) in enumerate(launches) if m == member and e > now)
        drop = {i for _, i in mine[:max(int(seen), 0)]}
        self._journal.launches = [entry for i, entry in enumerate(launches) if i not in drop]

    async def in_flight(self) -> dict[str, int]:
        async def remote() -> dict[str, int]:
            raw = await self._in_flight(keys=[self._k_inflight_members], args=[repr(self.clock()), self._k_inflight])
            return {m: int(n) for m, n in _pairs(raw)}

        return await self._call(remote, self._fallback.in_flight)

    # -- image-cache map -------------------------------------------------------------------
    async def learn_image(self, repo_key: str, member: str, ttl: float) -> None:
        now = self.clock()
        expiry = now + ttl
        await self._fallback.learn_image(repo_key, member, ttl)

        async def remote() -> None:
            self._snap.learned(repo_key, member, expiry)
            await self._learn_image(keys=[self._k_image + repo_key, self._k_images],
                                    args=[member, repr(expiry), f"{repo_key}\0{member}", repr(now),
                                          self._gc_ms(ttl)])

        await self._call(remote, self._nothing,
                         lambda: self._journal.images.__setitem__((repo_key, member), expiry))

    async def image_holders(self, repo_key: str) -> frozenset[str]:
        async def remote() -> frozenset[str]:
            now = self.clock()
            raw = await self._holders(keys=[self._k_image + repo_key], args=[repr(now)])
            scored = [(m, float(s)) for m, s in _pairs(raw)]
            await self._mirror_holders(repo_key, scored, now)
            return frozenset(m for m, _ in scored)

        return await self._call(remote, lambda: self._fallback.image_holders(repo_key))

    async def cache_size(self) -> int:
        async def remote() -> int:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(self._k_images, "-inf", repr(self.clock()))
                pipe.zcard(self._k_images)
                _, size = await pipe.execute()
            return int(size)

        return await self._call(remote, self._fallback.cache_size)

    # -- overrides and passive health ------------------------------------------------------
    async def set_override(self, member: str, override: Override | None) -> None:
        await self._fallback.set_override(member, override)
        when = self.clock()

        async def remote() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                if override is None:
                    pipe.hdel(self._k_override, member)
                else:
                    pipe.hset(self._k_override, member, json.dumps(override.to_json()))
                pipe.hincrby(self._k_versions, "override", 1)
                _, version = await pipe.execute()
            self._snap.wrote("override", int(version), {member: override})

        await self._call(remote, self._nothing,
                         lambda: self._journal.overrides.__setitem__(member, (override, when)))

    async def overrides(self) -> dict[str, Override]:
        async def remote() -> dict[str, Override]:
            overrides = self._decode_overrides(await self._redis.hgetall(self._k_override))
            await self._mirror(overrides=overrides)
            return overrides

        return await self._call(remote, self._fallback.overrides)

    async def set_ejection(self, member: str, until: float) -> None:
        await self._fallback.set_ejection(member, until)

        async def remote() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._k_ejection, member, repr(float(until)))
                pipe.hincrby(self._k_versions, "ejection", 1)
                _, version = await pipe.execute()
            self._snap.wrote("ejection", int(version), {member: float(until)})

        await self._call(remote, self._nothing, lambda: self._journal.ejections.__setitem__(member, until))

    async def ejections(self) -> dict[str, float]:
        async def remote() -> dict[str, float]:
            ejections = self._decode_ejections(await self._redis.hgetall(self._k_ejection))
            await self._mirror(ejections=ejections)
            return ejections

        return await self._call(remote, self._fallback.ejections)

    # -- launch log --------------------------------------------------------------------------
    async def recent_launches(self, since: float) -> list[dict[str, Any]]:
        async def remote() -> list[dict[str, Any]]:
            start = f"{max(0, math.floor(since * 1000))}-0" if since > 0 else "-"
            events: list[dict[str, Any]] = []
            while True:
                page = await self._redis.xrange(self._k_launches, start, "+", count=RANGE_PAGE)
                for _, fields in page:
                    try:
                        event = json.loads(fields["e"])
                    except (KeyError, ValueError, TypeError):
                        continue
                    if isinstance(event, dict) and event.get("timestamp", 0) >= since:
                        events.append(event)
                if len(page) < RANGE_PAGE:
                    return events
                start = "(" + page[-1][0]

        return await self._call(remote, lambda: self._fallback.recent_launches(since))

    async def launches_per_minute(self, now: float, minutes: int = 60) -> list[int]:
        last = int(now // 60)
        keys = [self._k_minute + str(m) for m in range(last - minutes + 1, last + 1)]

        async def remote() -> list[int]:
            return [int(n) if n is not None else 0 for n in await self._redis.mget(keys)]

        return await self._call(remote, lambda: self._fallback.launches_per_minute(now, minutes))

    # -- rate limits and leadership -----------------------------------------------------------
    async def hit(self, key: str, limit: int, window: float) -> tuple[bool, float]:
        async def remote() -> tuple[bool, float]:
            now = self.clock()
            count, start = await self._hit(keys=[self._k_rate + key], args=[repr(now), repr(float(window)),
                                                                           self._gc_ms(window)])
            return int(count) <= limit, max(0.0, float(start) + window - now)

        return await self._call(remote, lambda: self._fallback.hit(key, limit, window))

    async def limit_launch(self, rates: Sequence[RateCheck], repo_key: str | None) -> LimitState:
        async def remote() -> LimitState:
            now = self.clock()
            keys = [self._k_rate + rate.key for rate in rates]
            args: list[Any] = [repr(now), len(rates)]
            for rate in rates:
                args += [int(rate.limit), repr(float(rate.window)), self._gc_ms(rate.window)]
            if repo_key:
                keys.append(self._k_repo_inflight + repo_key)
            refused, start, in_flight = await self._limit_launch(keys=keys, args=args)
            index = int(refused)
            if index < 0:
                return LimitState(None, 0.0, int(in_flight))
            retry = max(0.0, float(start) + rates[index].window - now)
            return LimitState(index, retry, int(in_flight))

        # Degraded: windows are counted locally, and only this replica's launches are in flight.
        return await self._call(remote, lambda: self._fallback.limit_launch(rates, repo_key))

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        async def remote() -> bool:
            now = self.clock()
            return bool(await self._acquire(keys=[self._k_lease + name],
                                            args=[holder, repr(now), repr(now + ttl), self._gc_ms(ttl)]))

        async def local() -> bool:
            return True  # degraded: every replica probes members itself

        return await self._call(remote, local)

    async def release_lease(self, name: str, holder: str) -> None:
        async def remote() -> None:
            await self._release(keys=[self._k_lease + name], args=[holder])

        await self._call(remote, self._nothing)
