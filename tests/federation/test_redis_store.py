"""RedisStore only: URLs, round trips on the hot path, sharing between replicas, degradation, Sentinel.

Runs against real redis-server processes: the session one from tests/conftest.py, and
private ones (tests.support.redis_proc.RedisProcess) for tests that stop or freeze Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from federation.members import Member, MemberState, MemberStatus, Override
from federation.stores.redis import RedisStore
from federation.stores.redis_url import RedisTarget, parse_redis_url
from federation.stores.factory import open_store
from federation.stores.protocol import MEMBER_FULL, LimitState, RateCheck
from tests.conftest import fast_config, member_states
from tests.support.redis_proc import RedisProcess, free_port
from tests.support.clock import T0, FakeClock
from tests.support.races import frozen_loop_clock, on_next_write, spin_until
from tests.support.waiting import eventually

STORE_LOG = "binderfed.store"


@pytest.fixture
async def stores():
    """Make started RedisStores; all closed at the end of the test."""
    made: list[RedisStore] = []

    async def make(url: str, **kwargs: Any) -> RedisStore:
        store = RedisStore(url, **kwargs)
        made.append(store)
        await store.start()
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
def private_redis():
    """A redis-server of the test's own, which the test may stop, freeze and restart."""
    procs: list[RedisProcess] = []

    def make(start: bool = True) -> RedisProcess:
        proc = RedisProcess()
        procs.append(proc)
        if start:
            proc.start()
        return proc

    yield make
    for proc in procs:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGCONT)
        proc.stop()


@asynccontextmanager
async def plain_client(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


def status(name: str, checked_at: float = T0, **kw: Any) -> MemberStatus:
    return MemberStatus(name=name, state=kw.pop("state", MemberState.HEALTHY), reason=kw.pop("reason", "ok"),
                        quota=10, has_quota=True, total_pods=2, checked_at=checked_at, **kw)


# -- URLs ------------------------------------------------------------------------------------
def test_parse_plain_and_tls_urls():
    t = parse_redis_url("redis://127.0.0.1:6380/2")
    assert (t.kind, t.db, t.ssl, t.password) == ("redis", 2, False, None)
    assert t.describe() == "redis://127.0.0.1:6380/2"
    t = parse_redis_url("rediss://user:s%40cret@redis.example.org:6390/0")
    assert (t.kind, t.db, t.ssl, t.username, t.password) == ("rediss", 0, True, "user", "s@cret")
    assert "cret" not in t.describe() and t.describe() == "rediss://redis.example.org:6390/0"
    assert parse_redis_url("redis://localhost").db == 0
    with pytest.raises(ValueError, match="database must be a number"):
        parse_redis_url("redis://localhost/abc")
    with pytest.raises(ValueError, match="expected redis://"):
        parse_redis_url("http://localhost:6379")


def test_parse_sentinel_urls():
    t = parse_redis_url("redis+sentinel://10.0.0.1:26380,10.0.0.2,[::1]:5000/binderfed/3")
    assert t == RedisTarget(kind="sentinel", sentinels=(("10.0.0.1", 26380), ("10.0.0.2", 26379), ("::1", 5000)),
                            service="binderfed", db=3)
    t = parse_redis_url("redis+sentinel://s3cret@sentinel:26379/mymaster")
    assert (t.password, t.username, t.sentinels, t.service, t.db) == ("s3cret", None, (("sentinel", 26379),),
                                                                      "mymaster", 0)
    t = parse_redis_url("redis+sentinel://bob:pw@a:1,b:2/svc/1?sentinel_password=sp&ssl=true")
    assert (t.username, t.password, t.sentinel_password, t.ssl, t.db) == ("bob", "pw", "sp", True, 1)
    assert t.describe() == "redis+sentinel://a:1,b:2/svc/1"
    for bad, message in [("redis+sentinel://host:26379", "no service name"),
                         ("redis+sentinel://host:26379/", "no service name"),
                         ("redis+sentinel:///svc", "no sentinel host"),
                         ("redis+sentinel://host:port/svc", "bad port"),
                         ("redis+sentinel://host/svc/x", "database must be a number"),
                         ("redis+sentinel://host/svc/1/2", "too many path segments")]:
        with pytest.raises(ValueError, match=message):
            parse_redis_url(bad)


def test_open_store():
    clock = FakeClock()
    store = open_store("redis+sentinel://127.0.0.1:1/svc", clock=clock)
    assert isinstance(store, RedisStore) and store.clock is clock and store.target.kind == "sentinel"
    assert isinstance(open_store("rediss://127.0.0.1:1/0"), RedisStore)


# -- round trips -----------------------------------------------------------------------------
class SendCounter:
    """Counts the requests this process writes to Redis (a pipeline or EVALSHA is one)."""

    def __init__(self, monkeypatch):
        self.active = False
        self.sent: list[bytes] = []
        original = AbstractConnection.send_packed_command
        counter = self

        async def send(conn, command, check_health=True):
            if counter.active:
                parts = [command] if isinstance(command, (bytes, str)) else list(command)
                counter.sent.append(b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in parts))
            return await original(conn, command, check_health)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", send)


async def commandstats(client: aioredis.Redis) -> dict[str, int]:
    info = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


async def test_a_launch_is_one_round_trip(redis_url, stores, monkeypatch):
    """A launch reads the local snapshot (no command) and records in one EVALSHA; the status
    page's read (no repository) is one EVALSHA too. (The background refresh is a minute away.)"""
    store = await stores(redis_url, refresh_period=60)
    for i in range(5):
        await store.put_status(status(f"m{i}"))
        await store.learn_image("gh/x/y", f"m{i}", 600)
    await store.record_launch("m0", 300, {"timestamp": time.time(), "repo_key": "gh/x/y"})
    counter = SendCounter(monkeypatch)
    async with plain_client(redis_url) as admin:
        for call, commands in [(lambda: store.launch_state("gh/x/y"), 0), (lambda: store.launch_state(None), 1),
                               (lambda: store.record_launch("m1", 300, {"timestamp": time.time(), "member": "m1",
                                                                        "repo_key": "gh/x/y"}), 1),
                               (lambda: store.record_launch("m2", 300), 1),
                               (lambda: store.launch_state("gh/x/y"), 0)]:
            before = await commandstats(admin)
            counter.active, counter.sent = True, []
            await call()
            counter.active = False
            after = await commandstats(admin)
            assert len(counter.sent) == commands, counter.sent
            assert all(b"EVALSHA" in sent.upper() for sent in counter.sent)
            assert after.get("evalsha", 0) - before.get("evalsha", 0) == commands
            # (commandstats also counts the commands a script runs inside, so only check
            # that nothing else ran at the top level: no script (re)load, no transaction.)
            for top_level in ["eval", "script|load", "multi", "exec"]:
                assert after.get(top_level, 0) == before.get(top_level, 0), top_level
    state = await store.launch_state("gh/x/y")
    assert state.in_flight == {"m0": 1, "m1": 1, "m2": 1}
    assert state.holders == {f"m{i}" for i in range(5)} and set(state.statuses) == {f"m{i}" for i in range(5)}
    assert not store.degraded


async def test_concurrent_launches_share_one_round_trip_and_each_is_checked_atomically(redis_url, stores,
                                                                                         monkeypatch):
    """Launches reaching their record step in one turn of the event loop (a burst of requests)
    go to Redis in one EVALSHA, and the member's room still holds exactly, launch by launch."""
    store = await stores(redis_url, key_prefix="batched:", refresh_period=60)
    counter = SendCounter(monkeypatch)
    counter.active = True
    results = await asyncio.gather(*(
        store.record_launch("m0", 300, {"timestamp": time.time(), "member": "m0", "repo_key": f"gh/x/r{i % 3}"},
                            limit=5, repo_key=f"gh/x/r{i % 3}", repo_ttl=300, repo_cap=100)
        for i in range(30)))
    counter.active = False
    assert [bool(r) for r in results] == [True] * 5 + [False] * 25   # in the order they came
    assert {r.refused for r in results[5:]} == {MEMBER_FULL}
    assert len(counter.sent) == 1 and b"EVALSHA" in counter.sent[0].upper()
    assert (await store.launch_state("gh/x/r0")).in_flight == {"m0": 5} and await store.in_flight() == {"m0": 5}
    assert len(await store.recent_launches(0)) == 5   # one log entry per counted launch
    assert not store.degraded


async def test_a_settled_launch_leaves_this_replicas_count_at_once_and_only_once(redis_url, stores):
    """A failed attempt released by this replica is out of its next decision (not a refresh
    later), and its expiry does not count the member down a second time after a refresh."""
    clock = FakeClock()
    store = await stores(redis_url, clock=clock, key_prefix="settle-once:", refresh_period=60)
    await store.record_launch("m0", 10)    # the attempt that fails over
    await store.record_launch("m0", 100)   # a launch still starting
    assert (await store.launch_state("gh/x/y")).in_flight == {"m0": 2}
    await store.settle_in_flight("m0", 1)
    assert (await store.launch_state("gh/x/y")).in_flight == {"m0": 1}
    await store.backend.refresh(whole=False)
    clock.advance(20)   # past the settled attempt's expiry
    assert (await store.launch_state("gh/x/y")).in_flight == {"m0": 1}
    assert await store.in_flight() == {"m0": 1}   # what Redis itself counts
    clock.advance(100)
    assert (await store.launch_state("gh/x/y")).in_flight == {}


async def test_a_repository_not_read_lately_costs_one_more_round_trip(redis_url, stores, monkeypatch):
    store = await stores(redis_url, refresh_period=60)
    await store.learn_image("gh/new/repo", "m1", 600)
    counter = SendCounter(monkeypatch)
    counter.active = True
    assert (await store.launch_state("gh/other/repo")).holders == frozenset()
    assert (await store.launch_state("gh/other/repo")).holders == frozenset()
    counter.active = False
    assert len(counter.sent) == 1   # the first read of a repository's holders, then from memory


async def test_other_methods_are_one_round_trip(redis_url, stores, monkeypatch):
    store = await stores(redis_url)
    await store.launch_state(None)
    counter = SendCounter(monkeypatch)
    calls = [store.cache_size(), store.limit_launch([RateCheck("k", 5, 10)], None), store.acquire_lease("l", "me", 5), store.in_flight(),
             store.settle_in_flight("m", 1), store.learn_image("r", "m", 5), store.launch_state("r"),
             store.statuses(), store.overrides(), store.ejections(), store.release_lease("l", "me")]
    for call in calls:
        counter.active, counter.sent = True, []
        await call
        counter.active = False
        assert len(counter.sent) == 1


# -- replicas share state --------------------------------------------------------------------
async def test_two_replicas_see_each_other(redis_url, stores):
    clock = FakeClock()
    a = await stores(redis_url, clock=clock)
    b = await stores(redis_url, clock=clock)
    await a.put_status(status("m1"))
    await b.put_status(status("m2", state=MemberState.FULL))
    await a.record_launch("m1", 60, {"timestamp": T0, "by": "a"})
    await a.record_launch("m1", 60)
    await b.record_launch("m1", 60, {"timestamp": T0 + 1, "by": "b"})
    await b.record_launch("m2", 60)
    await a.learn_image("gh/x/y", "m1", 600)
    await b.learn_image("gh/x/y", "m2", 600)
    await a.set_override("m2", Override(draining=True, by="admin", at=T0))
    await b.set_ejection("m1", T0 + 30)
    for store in (a, b):
        # A launch reads the snapshot: the other replica's writes are in it within the refresh period.
        async def shared() -> bool:
            state = await store.launch_state("gh/x/y")
            return (set(state.statuses) == {"m1", "m2"} and state.statuses["m2"].state == MemberState.FULL
                    and state.in_flight == {"m1": 3, "m2": 1} and state.holders == {"m1", "m2"}
                    and state.overrides == {"m2": Override(draining=True, by="admin", at=T0)}
                    and state.ejections == {"m1": T0 + 30})

        await eventually(shared, timeout=store.refresh_period + store.full_refresh + 2, interval=0.02,
                         what="each replica to see the other's writes")
        state = await store.launch_state(None)   # the status page's read is fresh at once
        assert set(state.statuses) == {"m1", "m2"} and state.in_flight == {"m1": 3, "m2": 1}
        assert await store.cache_size() == 2
        assert [e["by"] for e in await store.recent_launches(0)] == ["a", "b"]
    await b.settle_in_flight("m1", 2)
    assert await a.in_flight() == {"m1": 1, "m2": 1}
    assert await a.acquire_lease("prober", "a", 10)
    assert not await b.acquire_lease("prober", "b", 10)
    await a.set_override("m2", None)
    assert await b.overrides() == {}
    assert await b.limit_launch([RateCheck("ip", 1, 10)], None) == LimitState(None, 0.0, 0)
    assert await a.limit_launch([RateCheck("ip", 1, 10)], None) == LimitState(0, 10.0, 0)
    assert not a.degraded and not b.degraded


async def test_key_prefixes_are_isolated(redis_url, stores):
    a = await stores(redis_url, key_prefix="fedA:")
    b = await stores(redis_url, key_prefix="fedB:")
    await a.put_status(status("m1"))
    await a.record_launch("m1", 60)
    assert await b.statuses() == {} and await b.in_flight() == {}
    async with plain_client(redis_url) as admin:
        keys = await admin.keys("*")
    assert keys and all(k.startswith("fedA:") for k in keys if k != "fedB:versions")   # B's change counters


async def test_keys_carry_a_garbage_collection_ttl(redis_url, stores):
    store = await stores(redis_url)
    await store.record_launch("m1", 30)
    await store.learn_image("gh/x/y", "m1", 30)
    await store.limit_launch([RateCheck("ip", 5, 10)], None)
    await store.acquire_lease("prober", "me", 10)
    async with plain_client(redis_url) as admin:
        for key, at_least in [("binderfed:inflight:m1", 30), ("binderfed:image:gh/x/y", 30),
                              ("binderfed:rate:ip", 10), ("binderfed:lease:prober", 10)]:
            ttl = await admin.pttl(key)
            assert at_least * 1000 < ttl <= (at_least + 61) * 1000, key


async def test_launch_log_is_bounded(redis_url, stores):
    store = await stores(redis_url, log_length=50)
    for i in range(400):
        await store.record_launch("m", 60, {"timestamp": T0 + i, "n": i})
    async with plain_client(redis_url) as admin:
        length = await admin.xlen("binderfed:launches")
    assert 50 <= length <= 50 + 100  # MAXLEN ~ trims whole stream nodes (100 entries each)
    events = await store.recent_launches(0)
    assert [e["n"] for e in events] == list(range(400 - length, 400))
    assert [e["n"] for e in await store.recent_launches(T0 + 395)] == [395, 396, 397, 398, 399]


async def test_recent_launches_pages_through_long_logs(redis_url, stores, monkeypatch):
    monkeypatch.setattr("federation.stores.redis.RANGE_PAGE", 7)
    store = await stores(redis_url)
    for i in range(30):
        await store.record_launch("m", 60, {"timestamp": T0 + i / 10, "n": i})
    assert [e["n"] for e in await store.recent_launches(0)] == list(range(30))
    assert [e["n"] for e in await store.recent_launches(T0 + 1)] == list(range(10, 30))


async def test_unreadable_entries_are_skipped(redis_url, stores, caplog):
    store = await stores(redis_url)
    await store.put_status(status("good"))
    async with plain_client(redis_url) as admin:
        await admin.hset("binderfed:status", "bad", "{not json")
        await admin.hset("binderfed:override", "bad", "[]")
        await admin.hset("binderfed:ejection", "bad", "soon")
    state = await store.launch_state(None)
    assert set(state.statuses) == {"good"} and state.overrides == {} and state.ejections == {}
    await store.launch_state(None)
    warnings = [r for r in caplog.records if "ignoring unreadable" in r.getMessage()]
    assert len(warnings) == 3  # once per bad entry, not once per read
    assert not store.degraded


# -- degradation ------------------------------------------------------------------------------
async def timed(awaitable, limit: float = 1.0):
    started = time.monotonic()
    result = await awaitable
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"call took {elapsed:.2f} s"
    return result


async def exercise_every_method(store: RedisStore) -> None:
    """Every method answers (without raising) and quickly."""
    await timed(store.launch_state("gh/x/y"))
    await timed(store.launch_state(None))
    await timed(store.record_launch("m1", 60, {"timestamp": time.time()}))
    await timed(store.put_status(status("m3")))
    await timed(store.statuses())
    await timed(store.settle_in_flight("m9", 1))
    await timed(store.in_flight())
    await timed(store.learn_image("gh/o/p", "m9", 60))
    await timed(store.launch_state("gh/o/p"))
    await timed(store.cache_size())
    await timed(store.set_override("m9", Override(weight=0.1, at=time.time())))
    await timed(store.overrides())
    await timed(store.set_ejection("m9", time.time() + 1))
    await timed(store.ejections())
    await timed(store.recent_launches(0))
    await timed(store.limit_launch([RateCheck("ip", 100, 10)], None))
    assert await timed(store.acquire_lease("prober", "someone", 10)) is True
    await timed(store.release_lease("prober", "someone"))


async def test_degrades_and_recovers_when_redis_stops(private_redis, stores, caplog):
    caplog.set_level(logging.INFO, logger=STORE_LOG)
    proc = private_redis()
    a = await stores(proc.url, backoff_initial=0.05, backoff_max=0.3)
    b = await stores(proc.url, backoff_initial=0.05, backoff_max=0.3)
    now = time.time()
    await a.put_status(status("m1", checked_at=now))
    await b.put_status(status("m2", checked_at=now))
    await a.record_launch("m1", 300, {"timestamp": now, "n": 1})
    await b.record_launch("m1", 300)
    await a.learn_image("gh/x/y", "m2", 600)
    await b.set_override("m2", Override(draining=True, at=now))
    await b.set_ejection("m1", now + 20)
    assert await b.acquire_lease("prober", "b", 30)
    assert not await a.acquire_lease("prober", "a", 30)
    before = await a.launch_state(None)
    assert before.in_flight == {"m1": 2} and set(before.statuses) == {"m1", "m2"}

    proc.stop()

    # The last snapshot plus this replica's own launches, every call quick, nothing raised.
    state = await timed(a.launch_state(None))
    assert a.degraded is True
    assert state.statuses == before.statuses
    assert state.overrides == {"m2": Override(draining=True, at=now)}
    assert state.ejections == {"m1": now + 20}
    assert state.in_flight == {"m1": 1}            # a's own launch; b's is not known here
    assert (await timed(a.launch_state("gh/x/y"))).holders == {"m2"}
    assert await timed(a.acquire_lease("prober", "a", 30)) is True   # degraded: probe members itself
    await exercise_every_method(a)
    assert [e.get("n") for e in await a.recent_launches(now)][:1] == [1]

    # Written while degraded: pushed back on recovery.
    later = time.time()
    await a.put_status(status("m1", checked_at=later, state=MemberState.UNHEALTHY, reason="down"))
    await a.record_launch("m2", 300, {"timestamp": later, "n": 2})
    await a.learn_image("gh/new/repo", "m1", 600)
    await a.set_override("m1", Override(weight=3.0, by="admin", at=later))
    await a.set_override("m2", None)
    await a.set_ejection("m2", later + 40)
    await asyncio.sleep(0.5)                        # a few reconnect attempts fail meanwhile
    assert a.degraded is True
    degraded_logs = [r for r in caplog.records if r.getMessage().startswith("store degraded")]
    # Once per replica (b's background refresh notices too), not once per call.
    assert 1 <= len(degraded_logs) <= 2, [r.getMessage() for r in degraded_logs]
    assert f"redis unreachable at redis://127.0.0.1:{proc.port}/0" in degraded_logs[0].getMessage()

    proc.start()                                    # a new, empty redis-server on the same port

    async def recovered() -> bool:
        await a.launch_state(None)
        return a.degraded is False

    await eventually(recovered, timeout=10, interval=0.05, what="the store to recover")
    assert any(r.getMessage().startswith("store recovered") for r in caplog.records)
    # b made no call while Redis was down (its background refresh noticed the outage): once
    # it has recovered too, it reads what a pushed back, within its freshness bound (b may
    # have recovered, and read Redis, before a's push went in).
    await eventually(lambda: not b.degraded, timeout=10, interval=0.05, what="b to recover")

    async def pushed_back() -> Any:
        state = await b.launch_state("gh/new/repo")
        return state if state.in_flight.get("m2") == 1 and "m1" in state.overrides else None

    state = await eventually(pushed_back, timeout=b.freshness_bound + 2, interval=0.05,
                             what="a's pushed-back writes in b's snapshot")
    assert state.statuses["m1"].state == MemberState.UNHEALTHY
    assert state.in_flight.get("m2") == 1
    assert state.holders == {"m1"}
    assert state.overrides["m1"] == Override(weight=3.0, by="admin", at=later)
    assert "m2" not in state.overrides
    assert state.ejections["m2"] == later + 40
    assert 2 in [e.get("n") for e in await b.recent_launches(later)]
    # The pushed-back launches (all the new server has) count on every replica's per-minute counters.
    assert sum(await b.launches_per_minute(later, 10)) == len(await b.recent_launches(0)) >= 1
    # And a's writes reach b again.
    await a.put_status(status("m4", checked_at=time.time()))
    assert "m4" in await b.statuses()


async def test_a_launch_limit_holds_against_own_launches_while_degraded(private_redis, stores):
    proc = private_redis()
    a = await stores(proc.url, backoff_initial=0.05, backoff_max=0.3)
    b = await stores(proc.url, backoff_initial=0.05, backoff_max=0.3)
    assert bool(await a.record_launch("m1", 300, limit=2)) is True
    assert bool(await b.record_launch("m1", 300, limit=2)) is True
    assert bool(await a.record_launch("m1", 300, limit=2)) is False      # shared: a sees b's launch

    proc.stop()

    assert bool(await timed(a.record_launch("m1", 300, limit=2))) is True   # alone: only its own launch counts
    assert a.degraded is True
    assert bool(await a.record_launch("m1", 300, limit=2)) is False
    assert await a.in_flight() == {"m1": 2}

    proc.start()                                    # empty: only what a journaled comes back

    async def recovered() -> bool:
        await a.launch_state(None)
        return a.degraded is False

    await eventually(recovered, timeout=10, interval=0.05, what="the store to recover")
    assert (await b.launch_state(None)).in_flight == {"m1": 1}   # the refused launch was not journaled


async def test_events_logged_while_degraded_are_pushed_back_in_chunks(private_redis, stores, monkeypatch):
    monkeypatch.setattr("federation.stores.journal.PUSH_CHUNK", 3)
    proc = private_redis()
    store = await stores(proc.url, backoff_initial=0.05, backoff_max=0.2)
    await store.record_launch("m1", 60, {"timestamp": T0, "n": 0})
    proc.stop()
    for i in range(1, 11):
        await store.record_launch("m1", 60, {"timestamp": T0 + i, "n": i})
    assert store.degraded
    proc.start()

    async def recovered() -> bool:
        return not store.degraded

    await eventually(recovered, timeout=10, interval=0.05, what="the store to recover")
    other = await stores(proc.url)
    assert [e["n"] for e in await other.recent_launches(0)] == list(range(1, 11))


async def test_a_failed_push_back_is_retried_without_losing_or_repeating(private_redis, stores):
    proc = private_redis()
    store = await stores(proc.url, backoff_initial=0.05, backoff_max=0.2)
    await store.put_status(status("m0"))
    proc.stop()
    await store.put_status(status("m1", checked_at=time.time()))
    await store.record_launch("m1", 60, {"timestamp": T0, "n": 0})
    assert store.degraded
    push, failures = store.backend.push, []

    async def flaky_push(*args, **kwargs):
        if not failures:
            failures.append(1)
            # Meanwhile this replica goes on writing: that must survive the failed push too.
            await store.record_launch("m1", 60, {"timestamp": T0 + 1, "n": 1})
            raise ConnectionError("connection reset during push")
        return await push(*args, **kwargs)

    store.backend.push = flaky_push
    proc.start()

    async def recovered() -> bool:
        return not store.degraded

    await eventually(recovered, timeout=10, interval=0.05, what="the store to recover")
    assert failures == [1]
    other = await stores(proc.url)
    state = await other.launch_state(None)
    assert set(state.statuses) == {"m1"} and state.in_flight == {"m1": 2}
    assert [e["n"] for e in await other.recent_launches(0)] == [0, 1]


async def test_calls_leave_redis_alone_until_a_reconnect_is_due(private_redis, stores, monkeypatch):
    proc = private_redis()
    store = await stores(proc.url, backoff_initial=60.0)
    await store.put_status(status("m1"))
    proc.stop()
    await store.statuses()
    assert store.degraded
    proc.start()                                      # back, but the next attempt is a minute away
    counter = SendCounter(monkeypatch)
    counter.active = True
    started = time.monotonic()
    for _ in range(50):
        await store.launch_state(None)
        await store.record_launch("m1", 60)
    assert time.monotonic() - started < 1.0
    assert counter.sent == [] and store.degraded is True
    assert (await store.launch_state(None)).in_flight == {"m1": 50}


async def test_frozen_redis_times_out_quickly(private_redis, stores):
    """A Redis that accepts connections but never answers (SIGSTOP): socket timeouts, not hangs."""
    proc = private_redis()
    store = await stores(proc.url, socket_timeout=0.3, connect_timeout=0.3, backoff_initial=0.05, backoff_max=0.2)
    await store.put_status(status("m1"))
    await store.record_launch("m1", 60)
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGSTOP)
    try:
        state = await timed(store.launch_state(None), limit=1.0)
        assert store.degraded and set(state.statuses) == {"m1"} and state.in_flight == {"m1": 1}
        await exercise_every_method(store)
    finally:
        proc.proc.send_signal(signal.SIGCONT)

    async def recovered() -> bool:
        await store.in_flight()
        return not store.degraded

    await eventually(recovered, timeout=10, interval=0.05, what="the store to recover")
    assert (await store.launch_state(None)).statuses["m3"].name == "m3"   # written while frozen, pushed back


async def test_start_while_redis_is_down(private_redis, stores):
    proc = private_redis(start=False)
    started = time.monotonic()
    store = await stores(proc.url, backoff_initial=0.05, backoff_max=0.2)
    assert time.monotonic() - started < 2.0
    assert store.degraded is True
    await store.put_status(status("m1"))
    await store.record_launch("m1", 60)
    assert (await store.launch_state(None)).in_flight == {"m1": 1}
    proc.start()

    async def recovered() -> bool:
        return not store.degraded

    await eventually(recovered, timeout=10, interval=0.05, what="the store to recover")
    other = await stores(proc.url)
    state = await other.launch_state(None)
    assert set(state.statuses) == {"m1"} and state.in_flight == {"m1": 1}


async def test_close_stops_reconnecting(private_redis, stores):
    proc = private_redis(start=False)
    store = RedisStore(proc.url, backoff_initial=0.05)
    await store.start()
    assert store.degraded and store._reconnector.is_running
    await store.close()
    assert not store._reconnector.is_running


# -- cancellation -------------------------------------------------------------------------------
async def test_a_call_cancelled_as_its_command_is_written_ends_cancelled(redis_url, stores, monkeypatch):
    """The cancellation that test teardowns lost (issue 14). With a socket timeout set,
    redis-py wraps every write in `asyncio.wait_for`, and Python 3.11's wait_for returns the
    write's result instead of raising when the cancel arrives after the write has finished
    but before wait_for resumes (CPython gh-86296, fixed in 3.12). The store call then ran
    on as if it had never been cancelled, and so did the loop that made it."""
    store = await stores(redis_url)
    await store.put_status(status("m1"))
    call = asyncio.create_task(store.statuses())
    fired = on_next_write(monkeypatch, call.cancel)
    done, _ = await asyncio.wait({call}, timeout=5)
    assert fired and done, "the call neither ended nor wrote"
    assert call.cancelled(), f"the cancel was lost: the call returned {call.result()!r}"
    assert set(await store.statuses()) == {"m1"} and not store.degraded   # the store is fine after it


@pytest.mark.parametrize("deadline", ["socket_timeout", "op_timeout"])
async def test_a_call_cancelled_as_its_timeout_expires_ends_cancelled(private_redis, stores, deadline):
    """The cause guessed first (issue 14), and not the one: a cancel that falls due together
    with a store timeout (Redis frozen, so the call waits for its deadline) is not turned
    into a timeout that the store's `except UNREACHABLE` would swallow; Python 3.11.3+'s
    asyncio.timeout counts the extra cancel and lets it through."""
    proc = private_redis()
    store = await stores(proc.url, socket_timeout=0.3, connect_timeout=0.3, backoff_initial=60)
    await store.put_status(status("m1"))
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGSTOP)
    try:
        with frozen_loop_clock() as clock:
            started = clock.now
            call = asyncio.create_task(store.statuses())
            assert not await spin_until(call.done, 20)    # waiting for the frozen Redis
            when = started + getattr(store, deadline)
            asyncio.get_running_loop().call_at(when, call.cancel)
            clock.advance_to(when)                        # the timeout and the cancel fall due together
            assert await spin_until(call.done), "the call did not end"
        assert call.cancelled(), f"the cancel became a timeout and was swallowed: {call.result()!r}"
    finally:
        proc.proc.send_signal(signal.SIGCONT)


# -- Sentinel -------------------------------------------------------------------------------------
@pytest.fixture
def sentinel(private_redis):
    """A master and one redis-server in sentinel mode watching it as `fedmaster`."""
    master = private_redis()
    workdir = tempfile.mkdtemp(prefix="binderfed-sentinel-")
    port = free_port()
    conf = os.path.join(workdir, "sentinel.conf")
    with open(conf, "w") as f:
        f.write(f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor fedmaster 127.0.0.1 {master.port} 1\n")
    proc = subprocess.Popen([master.binary, conf, "--sentinel"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield master, port
    finally:
        proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


async def test_sentinel_url_reaches_the_master(sentinel, stores):
    master, port = sentinel
    store = await stores(f"redis+sentinel://127.0.0.1:{port}/fedmaster/0", backoff_initial=0.05, backoff_max=0.2)

    async def connected() -> bool:
        return not store.degraded   # the sentinel may still be starting: the store retries

    await eventually(connected, timeout=10, interval=0.05, what="the store to connect")
    await store.put_status(status("m1"))
    await store.record_launch("m1", 60)
    direct = await stores(master.url)
    state = await direct.launch_state(None)
    assert set(state.statuses) == {"m1"} and state.in_flight == {"m1": 1}
    assert not store.degraded


# -- an error Redis answers is a bug, not an outage ----------------------------------------------


async def test_a_script_error_is_logged_as_an_error_and_does_not_degrade_the_store(redis_url, stores, caplog):
    store = await stores(redis_url)
    errors = []
    store.on_error = lambda: errors.append(1)
    now = time.time()
    await store.put_status(status("m1", checked_at=now))
    assert set((await store.launch_state(None)).statuses) == {"m1"}   # mirrored locally
    async with plain_client(redis_url) as admin:
        await admin.set("binderfed:inflight-members", "not a set")   # the launch-state script now fails: WRONGTYPE
        state = await timed(store.launch_state(None))
        assert set(state.statuses) == {"m1"}                           # answered from memory, nothing raised
        assert store.degraded is False and errors == [1] and store.errors == 1
        record = next(r for r in caplog.records if r.levelno == logging.ERROR and "store error" in r.getMessage())
        assert "RedisStore.launch_state" in record.getMessage() and "WRONGTYPE" in record.getMessage()
        assert "this is not an outage" in record.getMessage()
        assert not any(r.getMessage().startswith("store degraded") for r in caplog.records)
        await admin.delete("binderfed:inflight-members")
    # The next call goes to Redis again (no reconnect loop was started): it sees another replica's write.
    async with plain_client(redis_url) as admin:
        await admin.hset("binderfed:status", "m2", json.dumps(status("m2", checked_at=now).to_json()))
    assert set((await store.launch_state(None)).statuses) == {"m1", "m2"}
    assert store.errors == 1


# -- through the router: freshness of the snapshot and the cost of a redirect ---------------------
def healthy(name: str, quota: int) -> MemberStatus:
    return MemberStatus(name=name, state=MemberState.HEALTHY, reason="ok", quota=quota, has_quota=True,
                        checked_at=time.time())


async def place(http, router, path: str) -> str:
    async with http.get(router.url + "/api/v1/place?path=" + path) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["member"]


async def first_placed_on(http, router, member: str, paths: list[str]) -> str | None:
    for path in paths:
        if await place(http, router, path) == member:
            return path
    return None


async def test_a_redirect_costs_one_redis_command(start_router, redis_url, http, monkeypatch):
    members = [Member(name, f"http://127.0.0.1:9/{name}") for name in ("alpha", "beta", "gamma")]
    store = RedisStore(redis_url, key_prefix="redirect-cost:", refresh_period=60)
    router = await start_router(fast_config(members), store=store, probe=False)
    for member in members:
        await store.put_status(healthy(member.name, 10_000))
    paths = [f"/v2/gh/cost/repo{i}/HEAD" for i in range(5)]
    for path in paths:  # the first launch of a repository reads its image holders
        async with http.get(router.url + path, allow_redirects=False) as response:
            assert response.status == 307
    counter = SendCounter(monkeypatch)
    async with plain_client(redis_url) as admin:
        before = await commandstats(admin)
        counter.active = True
        for path in paths * 4:
            async with http.get(router.url + path, allow_redirects=False) as response:
                assert response.status == 307 and response.headers["X-Binder-Federation-Member"]
        counter.active = False
        after = await commandstats(admin)
    assert len(counter.sent) == len(paths) * 4, counter.sent       # one request to Redis per redirect
    assert all(b"EVALSHA" in sent.upper() for sent in counter.sent)
    assert after.get("evalsha", 0) - before.get("evalsha", 0) == len(paths) * 4
    assert not store.degraded


async def test_a_launch_on_one_replica_is_in_the_others_next_decision(start_router, redis_url, http):
    """Alpha has room for one launch. Once a launch through replica A fills it, replica B
    places elsewhere within its freshness bound, without launching anything itself (the
    image holders and whole reads are a minute away: only the refresh can tell B)."""
    members = [Member("alpha", "http://127.0.0.1:9/alpha"), Member("beta", "http://127.0.0.1:9/beta")]
    config = fast_config(members, pod_headroom=0, in_flight_ttl=120)
    stores = [RedisStore(redis_url, key_prefix="fresh-launch:", refresh_period=0.1, full_refresh=60,
                         holders_ttl=60) for _ in range(2)]
    a, b = [await start_router(config, store=store, probe=False, seed=i) for i, store in enumerate(stores)]
    await stores[0].put_status(healthy("alpha", 1))
    await stores[0].put_status(healthy("beta", 100))
    for router in (a, b):
        await eventually(lambda: _all_healthy(http, router), timeout=5, what="both members healthy")
    path = await first_placed_on(http, b, "alpha", [f"/v2/gh/fresh/repo{i}/HEAD" for i in range(50)])
    assert path is not None and await place(http, a, path) == "alpha"

    async with http.get(a.url + path, allow_redirects=False) as response:
        assert response.status == 307 and response.headers["X-Binder-Federation-Member"] == "alpha"

    async def b_places_elsewhere() -> bool:
        return await place(http, b, path) == "beta"

    bound = stores[1].refresh_period + stores[1].op_timeout
    await eventually(b_places_elsewhere, timeout=bound + 1, interval=0.02, what="B to see A's launch on alpha")


async def test_a_status_written_by_the_prober_reaches_the_other_replicas_launches(start_devhub, start_router,
                                                                                  redis_url, http):
    """Replica A probes; replica B only reads. A member that turns unhealthy leaves B's
    decisions within a probe period plus B's refresh."""
    hubs = [await start_devhub("alpha", quota=100), await start_devhub("beta", quota=100)]
    config = fast_config([Member(h.settings.name, h.url) for h in hubs])
    stores = [RedisStore(redis_url, key_prefix="fresh-status:", refresh_period=0.1, full_refresh=60,
                         holders_ttl=60) for _ in range(2)]
    a = await start_router(config, store=stores[0], probe=True)
    b = await start_router(config, store=stores[1], probe=False, seed=1)
    candidates = [f"/v2/gh/status/repo{i}/HEAD" for i in range(50)]

    async def b_uses_beta() -> str | None:
        return await first_placed_on(http, b, "beta", candidates)

    path = await eventually(b_uses_beta, timeout=10, what="both members healthy in B's view")
    hubs[1].set_faults(unhealthy=True)
    await eventually(lambda: _unhealthy(stores[0], "beta"), timeout=10, what="A's prober to mark beta unhealthy")

    async def b_avoids_beta() -> bool:
        return await place(http, b, path) == "alpha"

    bound = stores[1].refresh_period + stores[1].op_timeout
    await eventually(b_avoids_beta, timeout=bound + 1, interval=0.02, what="B to stop placing on beta")
    assert a.ctx.prober is not None and a.ctx.prober.is_leader


async def _all_healthy(http, router) -> bool:
    return set((await member_states(http, router)).values()) == {"healthy"}


async def _unhealthy(store: RedisStore, name: str) -> bool:
    status = (await store.statuses()).get(name)
    return status is not None and status.state == MemberState.UNHEALTHY
