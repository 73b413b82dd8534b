"""The distributed store: router state shared by many replicas through Redis.

`RedisStore` is a `FallbackStore` (federation.stores.fallback: how it degrades while
Redis is away, and what it pushes back) around a `RedisBackend`, which does the work.
URLs: federation.stores.redis_url. Scripts: federation/stores/lua/*.lua.

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
A launch costs one round trip at most: `record_launch`, one ``EVALSHA``, shared by every
launch that reaches its record step in the same turn of the event loop (a burst of
requests; `federation.stores.batch`): the script records them one after the other, each
checked and counted atomically as if it came alone, and answers each. `launch_state(repo_key)`
is answered from a local snapshot (`federation.stores.snapshot`, see "Freshness"), so it
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
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any, Mapping, Sequence

from hub.tasks import BackgroundService

from ..members import MemberStatus, Override
from .batch import Batch
from .fallback import FallbackStore
from .journal import Journal, event_json, event_ms
from .memory import MemoryStore
from .protocol import (COUNTED, MEMBER_FULL, MINUTES_KEPT, REPO_CAP, Clock, LaunchState, LimitState, RateCheck,
                       RecordResult, Store, event_minute)
from .redis_client import UNREACHABLE, make_client
from .redis_mirror import Mirror, pairs
from .redis_url import parse_redis_url
from .scripts import source
from .snapshot import KINDS, Snapshot

REFRESH_PERIOD = 0.1      # seconds between two refreshes of the local snapshot
FULL_REFRESH = 2.0        # seconds between two whole reads of statuses, overrides and ejections
HOLDERS_TTL = 5.0         # seconds a repository's image holders are kept without a read
GC_MARGIN = 60.0          # seconds a key outlives its logical expiry (garbage collection only)
RANGE_PAGE = 5000         # stream entries per XRANGE in recent_launches
SCRIPTS = ("snapshot", "in_flight", "record_launch", "settle", "put_statuses", "learn_image", "holders",
           "limit_launch", "acquire", "release", "push")


def _gc_ms(ttl: float) -> int:
    return max(1, math.ceil((ttl + GC_MARGIN) * 1000))


class _Refresher(BackgroundService):
    """Keeps a store's local snapshot fresh: one read every `refresh_period` seconds."""

    def __init__(self, store: "RedisStore") -> None:
        super().__init__("redis-store-refresh")
        self.store = store

    async def run(self) -> None:
        store = self.store
        while await self.pause(store.refresh_period):
            if not store.degraded:  # else the reconnector brings it back; the fallback answers meanwhile
                await store._call("refresh", whole=time.monotonic() - store.backend.full_at >= store.full_refresh)


class RedisBackend(Store):
    """The Store methods on Redis; they raise when Redis fails (`FallbackStore` answers then)."""

    unreachable = UNREACHABLE

    def __init__(self, url: str, local: MemoryStore, *, key_prefix: str, log_length: int, connect_timeout: float,
                 holders_ttl: float):
        super().__init__(local.clock)
        self.target = parse_redis_url(url)
        self.key_prefix = key_prefix
        self.log_length = log_length
        self.local = local
        self.mirror = Mirror(local)
        self.snap = Snapshot(holders_ttl)
        self.full_at = 0.0   # monotonic time of the last whole read
        self.redis, self.sentinel = make_client(self.target, connect_timeout)
        p = key_prefix
        self._k_status, self._k_override, self._k_ejection = p + "status", p + "override", p + "ejection"
        self._k_inflight_members, self._k_inflight = p + "inflight-members", p + "inflight:"
        self._k_image, self._k_images = p + "image:", p + "images"
        self._k_launches, self._k_rate, self._k_lease = p + "launches", p + "rate:", p + "lease:"
        self._k_repo_inflight, self._k_minute, self._k_versions = p + "repo-inflight:", p + "launch-minute:", p + "versions"
        self.scripts = {name: self.redis.register_script(source(name)) for name in SCRIPTS}
        # The record steps of one turn of the event loop, one EVALSHA (federation.stores.batch).
        self.records: Batch[list[str], list[Any]] = Batch(self._record_launches)

    def describe(self) -> str:
        return self.target.describe()

    # -- lifecycle (FallbackStore's Remote) ------------------------------------------------
    async def connect(self) -> None:
        await self.redis.ping()
        for script in self.scripts.values():
            script.sha = await self.redis.script_load(script.script)
        await self.refresh(whole=True)

    async def ping(self) -> None:
        await self.redis.ping()

    async def resync(self) -> None:
        self.mirror.forget()
        await self.refresh(whole=True)

    async def aclose(self) -> None:
        await self.records.aclose()
        for client in [self.redis, *(self.sentinel.sentinels if self.sentinel is not None else ())]:
            try:
                await client.aclose()
            except UNREACHABLE:
                pass

    async def push(self, journal: Journal) -> None:
        """What was written while degraded, in one script per chunk of events."""
        payloads = journal.payloads()
        for payload in payloads:
            try:
                await self.scripts["push"](
                    keys=[self._k_status, self._k_override, self._k_ejection, self._k_inflight_members,
                          self._k_launches, self._k_images],
                    args=[json.dumps(payload), self.key_prefix, repr(self.clock()), self.log_length,
                          int(GC_MARGIN * 1000), _gc_ms(MINUTES_KEPT * 60)])
            except BaseException as exc:
                payloads.throw(exc)   # the chunk's events go back into the journal; re-raised

    # -- the snapshot -----------------------------------------------------------------------
    async def refresh(self, whole: bool) -> None:
        """Read Redis into the snapshot: in-flight counts, and statuses, overrides and
        ejections whose version moved (all three when `whole`). One EVALSHA."""
        snap = self.snap
        now = self.clock()
        known = ["", "", ""] if whole else [str(snap.known[kind]) for kind in KINDS]
        if whole:
            self.full_at = time.monotonic()
        raw = json.loads(await self.scripts["snapshot"](
            keys=[self._k_status, self._k_override, self._k_ejection, self._k_inflight_members, self._k_versions],
            args=[repr(now), self._k_inflight, *known, uuid.uuid4().hex]))
        if snap.new_epoch(raw[0][4]) and not whole:
            return await self.refresh(whole=True)
        versions = [int(v) for v in raw[0][:4]]
        # cjson encodes an empty Lua table as {} and a part that did not change as false.
        read = {"status": self.mirror.statuses, "override": self.mirror.overrides, "ejection": self.mirror.ejections}
        for i, kind in enumerate(KINDS):
            if raw[1 + i] is not False:
                snap.refreshed(kind, versions[i], await read[kind](raw[1 + i] or []))
        snap.refreshed_counts({m: int(n) for m, n in pairs(raw[4] or [])}, versions[3], now)

    # -- hot path ----------------------------------------------------------------------
    async def launch_state(self, repo_key: str | None) -> LaunchState:
        """From the local snapshot (module docstring, "Freshness"): no round trip for a
        launch of a repository whose holders were read in the last `holders_ttl` seconds.
        Without a repository (the status page, the members API) Redis is read first."""
        if repo_key is None:
            await self.refresh(whole=True)
        now = self.clock()
        holders = self.snap.holders(repo_key, now) if repo_key else frozenset()
        if holders is None:  # not read lately: one round trip
            raw = await self.scripts["holders"](keys=[self._k_image + repo_key], args=[repr(now)])
            scored = [(m, float(s)) for m, s in pairs(raw)]
            self.snap.set_holders(repo_key, scored)
            await self.mirror.holders(repo_key, scored, now)
            holders = frozenset(m for m, _ in scored)
        parts = self.snap.parts
        return LaunchState(statuses=parts["status"], in_flight=self.snap.in_flight(now),
                           overrides=parts["override"], ejections=parts["ejection"], holders=holders)

    async def record_launch(self, member: str, ttl: float, event: Mapping[str, Any] | None = None, *,
                            limit: int | None = None, repo_key: str | None = None, repo_ttl: float = 0.0,
                            repo_cap: int | None = None) -> RecordResult:
        now = self.clock()
        expiry = now + ttl
        # The repository whose holders come back with the answer (the event names it when
        # the launch is not counted towards a repository cap).
        repo = repo_key or (event.get("repo_key") if event is not None else None)
        repo = repo if isinstance(repo, str) and repo else None
        minute = event_minute(event, now) if event is not None else int(now // 60)
        counted_repo = repo_key is not None
        launch = [member, uuid.uuid4().hex, repr(expiry), str(_gc_ms(ttl)),
                  event_json(event) if event is not None else "", str(event_ms(event) if event is not None else 0),
                  "" if limit is None else str(int(limit)), str(minute), repo or "",
                  repo_key or "", repr(now + repo_ttl) if counted_repo else "",
                  str(_gc_ms(repo_ttl)) if counted_repo else "", "" if repo_cap is None else str(int(repo_cap))]
        code, count, version, holders, repo_n = await self.records.submit(launch)
        code, count = int(code), int(count)
        if repo:
            self.snap.set_holders(repo, [(m, float(s)) for m, s in pairs(holders)])
        if count >= 0:  # what this launch saw of its member, this one included when counted
            self.snap.counted(member, count, int(version), expiry if code == 1 else None)
        if code == 2:
            return RecordResult(False, REPO_CAP, int(repo_n))
        if code == 0:
            return RecordResult(False, MEMBER_FULL)
        # Mirrored, so the fallback knows this replica's launches if Redis goes away.
        await self.local.record_launch(member, ttl, event, repo_key=repo_key, repo_ttl=repo_ttl)
        return COUNTED

    async def _record_launches(self, launches: list[list[str]]) -> list[list[Any]]:
        return await self.scripts["record_launch"](
            keys=[self._k_inflight_members, self._k_launches, self._k_versions],
            args=[json.dumps(launches), self.key_prefix, repr(self.clock()), self.log_length,
                  _gc_ms(MINUTES_KEPT * 60)])

    async def limit_launch(self, rates: Sequence[RateCheck], repo_key: str | None) -> LimitState:
        now = self.clock()
        keys = [self._k_rate + rate.key for rate in rates]
        args: list[Any] = [repr(now), len(rates)]
        for rate in rates:
            args += [int(rate.limit), repr(float(rate.window)), _gc_ms(rate.window)]
        if repo_key:
            keys.append(self._k_repo_inflight + repo_key)
        refused, start, in_flight = await self.scripts["limit_launch"](keys=keys, args=args)
        index = int(refused)
        if index < 0:
            return LimitState(None, 0.0, int(in_flight))
        return LimitState(index, max(0.0, float(start) + rates[index].window - now), int(in_flight))

    # -- member status -------------------------------------------------------------------
    async def put_status(self, status: MemberStatus) -> None:
        await self._hash_write("status", {status.name: status}, self._k_status, json.dumps(status.to_json()))

    async def put_statuses(self, statuses: Sequence[MemberStatus], settled: Mapping[str, int]) -> None:
        args: list[Any] = [repr(self.clock()), self._k_inflight, len(statuses)]
        for status in statuses:
            args += [status.name, json.dumps(status.to_json())]
        for member, seen in settled.items():
            args += [member, max(int(seen), 0)]
        version = await self.scripts["put_statuses"](
            keys=[self._k_status, self._k_inflight_members, self._k_versions], args=args)
        self.snap.wrote("status", int(version), {status.name: status for status in statuses})
        for member, seen in settled.items():
            self.snap.settled(member, int(seen))

    async def statuses(self) -> dict[str, MemberStatus]:
        return await self.mirror.statuses(await self.redis.hgetall(self._k_status))

    async def settle_in_flight(self, member: str, seen: int) -> None:
        await self.scripts["settle"](keys=[self._k_inflight + member, self._k_inflight_members, self._k_versions],
                                     args=[repr(self.clock()), max(int(seen), 0), member])
        self.snap.settled(member, int(seen))

    async def in_flight(self) -> dict[str, int]:
        raw = await self.scripts["in_flight"](keys=[self._k_inflight_members], args=[repr(self.clock()),
                                                                                      self._k_inflight])
        return {m: int(n) for m, n in pairs(raw)}

    # -- image-cache map -------------------------------------------------------------------
    async def learn_image(self, repo_key: str, member: str, ttl: float) -> None:
        now = self.clock()
        self.snap.learned(repo_key, member, now + ttl)
        await self.scripts["learn_image"](keys=[self._k_image + repo_key, self._k_images],
                                          args=[member, repr(now + ttl), f"{repo_key}\0{member}", repr(now),
                                                _gc_ms(ttl)])

    async def cache_size(self) -> int:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self._k_images, "-inf", repr(self.clock()))
            pipe.zcard(self._k_images)
            _, size = await pipe.execute()
        return int(size)

    # -- overrides and passive health ------------------------------------------------------
    async def _hash_write(self, kind: str, change: Mapping[str, Any], key: str, raw: str | None) -> None:
        """Set (or, with `raw` None, delete) one field of hash `key` and count the change of `kind`."""
        [name] = change
        async with self.redis.pipeline(transaction=True) as pipe:
            if raw is None:
                pipe.hdel(key, name)
            else:
                pipe.hset(key, name, raw)
            pipe.hincrby(self._k_versions, kind, 1)
            _, version = await pipe.execute()
        self.snap.wrote(kind, int(version), change)

    async def set_override(self, member: str, override: Override | None) -> None:
        await self._hash_write("override", {member: override}, self._k_override,
                               None if override is None else json.dumps(override.to_json()))

    async def overrides(self) -> dict[str, Override]:
        return await self.mirror.overrides(await self.redis.hgetall(self._k_override))

    async def set_ejection(self, member: str, until: float) -> None:
        await self._hash_write("ejection", {member: float(until)}, self._k_ejection, repr(float(until)))

    async def ejections(self) -> dict[str, float]:
        return await self.mirror.ejections(await self.redis.hgetall(self._k_ejection))

    # -- launch log --------------------------------------------------------------------------
    async def recent_launches(self, since: float) -> list[dict[str, Any]]:
        start = f"{max(0, math.floor(since * 1000))}-0" if since > 0 else "-"
        events: list[dict[str, Any]] = []
        while True:
            page = await self.redis.xrange(self._k_launches, start, "+", count=RANGE_PAGE)
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

    async def launches_per_minute(self, now: float, minutes: int = 60) -> list[int]:
        last = int(now // 60)
        keys = [self._k_minute + str(m) for m in range(last - minutes + 1, last + 1)]
        return [int(n) if n is not None else 0 for n in await self.redis.mget(keys)]

    # -- leadership --------------------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        now = self.clock()
        return bool(await self.scripts["acquire"](keys=[self._k_lease + name],
                                                  args=[holder, repr(now), repr(now + ttl), _gc_ms(ttl)]))

    async def release_lease(self, name: str, holder: str) -> None:
        await self.scripts["release"](keys=[self._k_lease + name], args=[holder])


class RedisStore(FallbackStore):
    """Router state shared by replicas through Redis, degrading to local memory when it is away."""

    def __init__(self, url: str, clock: Clock = time.time, key_prefix: str = "binderfed:",
                 log_length: int = 100_000, *, socket_timeout: float = 0.5, connect_timeout: float = 0.5,
                 backoff_initial: float = 0.5, backoff_max: float = 10.0, refresh_period: float = REFRESH_PERIOD,
                 full_refresh: float = FULL_REFRESH, holders_ttl: float = HOLDERS_TTL):
        local = MemoryStore(clock, log_length=min(log_length, 10_000))
        self.backend = RedisBackend(url, local, key_prefix=key_prefix, log_length=log_length,
                                    connect_timeout=connect_timeout, holders_ttl=holders_ttl)
        # A call never waits longer than op_timeout for Redis (connecting included),
        # whatever the client library does: redis-py enforces only the connect timeout.
        super().__init__(self.backend, local, op_timeout=socket_timeout + connect_timeout,
                         backoff_initial=backoff_initial, backoff_max=backoff_max, log_length=log_length)
        self.target = self.backend.target
        self.key_prefix = key_prefix
        self.socket_timeout = socket_timeout    # for the answer, once connected
        self.connect_timeout = connect_timeout  # for a new connection (redis-py enforces this one)
        self.refresh_period = refresh_period   # the local snapshot's refresh (module docstring, "Freshness")
        self.full_refresh = full_refresh
        # Statuses, overrides, ejections and in-flight counts within a refresh (plus the
        # read's own time, at most op_timeout); image holders within holders_ttl.
        self.freshness_bound = max(refresh_period + self.op_timeout, holders_ttl)
        self._refresher = _Refresher(self)

    async def start(self) -> None:
        await super().start()
        await self._refresher.start()

    async def close(self) -> None:
        await self._refresher.stop()
        await super().close()
