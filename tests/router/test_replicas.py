"""Two router replicas sharing one real redis-server: one federation view.

Each replica has its own RedisStore (its own connections, its own local fallback), as
two router processes behind a load balancer would. Tests that kill Redis get a private
redis-server; the others share the session one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from dataclasses import replace

import pytest
import redis.asyncio as redis

from federation.config import FederationConfig
from federation.members import Override
from federation.spec import parse_launch
from federation.stores.factory import open_store
from tests.conftest import RouterHandle, fast_config, member_of
from tests.support.waiting import eventually

LEASE_TTL = 1.0  # seconds: short, so a handover fits in a test


def replica_config(members, **policy) -> FederationConfig:
    config = fast_config(members, **policy)
    return replace(config, health=replace(config.health, lease_ttl=LEASE_TTL))


async def start_replicas(start_router, config: FederationConfig, url: str, n: int = 2) -> list[RouterHandle]:
    return [await start_router(config, store=open_store(url), seed=i) for i in range(n)]


async def get_json(http, url: str) -> dict:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def members_of(http, router: RouterHandle) -> dict[str, dict]:
    body = await get_json(http, router.url + "/api/v1/members")
    return {m["name"]: m for m in body["members"]}


async def wait_all(http, routers, states: dict[str, str], timeout: float = 10.0) -> None:
    async def check():
        for router in routers:
            members = await members_of(http, router)
            if any(members.get(name, {}).get("state") != state for name, state in states.items()):
                return False
        return True
    await eventually(check, timeout=timeout, what=f"every replica to show {states}")


async def metrics(http, router: RouterHandle) -> str:
    async with http.get(router.url + "/metrics") as response:
        assert response.status == 200
        return await response.text()


def sample_sum(text: str, name: str) -> float:
    """Sum of the samples of metric `name` over all its label sets (0 when absent)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


async def launch(http, router: RouterHandle, path: str) -> tuple[int, str | None, str | None]:
    async with http.get(router.url + path, allow_redirects=False) as response:
        await response.read()
        return response.status, response.headers.get("X-Binder-Federation-Member"), response.headers.get("Location")


def leaders(routers) -> list[RouterHandle]:
    return [r for r in routers if r.ctx.prober is not None and r.ctx.prober.is_leader]


# -- sharing ------------------------------------------------------------------------------
async def test_a_burst_split_across_replicas_never_overfills_a_member(start_devhub, start_router, redis_url, http):
    quota = 4
    # The visitor never follows the redirect, so the members never see a pod: the shared
    # in-flight counts (30 s) are all that stand between the burst and an overfilled member.
    hubs = [await start_devhub("alpha", quota=quota), await start_devhub("beta", quota=quota)]
    config = replica_config([member_of(hubs[0]), member_of(hubs[1])],
                            in_flight_ttl=30, pod_headroom=0, panic=False)
    replicas = await start_replicas(start_router, config, redis_url)
    await wait_all(http, replicas, {"alpha": "healthy", "beta": "healthy"})

    paths = [f"/v2/gh/burst/repo{i}/HEAD" for i in range(3 * quota)]
    results = await asyncio.gather(*(launch(http, replicas[i % 2], p) for i, p in enumerate(paths)))

    assert {status for status, _, _ in results} <= {307, 503}, results
    sent = collections.Counter(member for status, member, _ in results if status == 307)
    assert sent == {"alpha": quota, "beta": quota}, results   # full, never over
    assert sum(1 for status, _, _ in results if status == 503) == quota
    for replica in replicas:  # both see both members full
        members = await members_of(http, replica)
        assert {m["in_flight"] for m in members.values()} == {quota}
        assert {m["free"] for m in members.values()} == {0}


async def test_cache_knowledge_learned_on_one_replica_places_on_the_other(start_devhub, start_router, redis_url,
                                                                          http):
    hubs = [await start_devhub("alpha", quota=20), await start_devhub("beta", quota=20)]
    a, b = await start_replicas(start_router, replica_config([member_of(hubs[0]), member_of(hubs[1])]), redis_url)
    await wait_all(http, [a, b], {"alpha": "healthy", "beta": "healthy"})

    async def placed(router, path):
        return await get_json(http, router.url + "/api/v1/place?path=" + path)

    # A repository whose affinity alone would send it to alpha: only cache knowledge moves it.
    candidates = [f"/v2/gh/cached/repo{i}/HEAD" for i in range(50)]
    path = next(p for p, d in zip(candidates, [await placed(b, p) for p in candidates]) if d["member"] == "alpha")
    assert (await placed(b, path))["reason"] == "affinity"
    await a.ctx.store.learn_image(parse_launch(path, "").repo_key, "beta", 3600)

    async def by_cache():  # within the holders' freshness bound (federation.stores.redis, "Freshness")
        decision = await placed(b, path)
        return (decision["member"], decision["reason"]) == ("beta", "cache")
    await eventually(by_cache, timeout=b.ctx.store.freshness_bound + 2, what="b to place by a's cache knowledge")


async def test_replicas_agree_on_member_status(start_devhub, start_router, redis_url, http):
    hubs = [await start_devhub("alpha", quota=20), await start_devhub("beta", quota=20)]
    replicas = await start_replicas(start_router, replica_config([member_of(hubs[0]), member_of(hubs[1])]), redis_url)
    await wait_all(http, replicas, {"alpha": "healthy", "beta": "healthy"})

    hubs[1].set_faults(unhealthy=True)
    await wait_all(http, replicas, {"alpha": "healthy", "beta": "unhealthy"})

    async def same_status():
        a, b = [await members_of(http, r) for r in replicas]
        return a["beta"]["status"] == b["beta"]["status"] and a["beta"]["reason"] == b["beta"]["reason"] and a
    members = await eventually(same_status, what="both replicas to show the same status of beta")
    assert members["beta"]["reason"] == "failed checks: JupyterHub API"


async def test_only_one_replica_probes(start_devhub, start_router, redis_url, http):
    hubs = [await start_devhub("alpha", quota=20), await start_devhub("beta", quota=20)]
    replicas = await start_replicas(start_router, replica_config([member_of(hubs[0]), member_of(hubs[1])]), redis_url)
    await wait_all(http, replicas, {"alpha": "healthy", "beta": "healthy"})

    [leader] = leaders(replicas)
    [follower] = [r for r in replicas if r is not leader]
    start = sample_sum(await metrics(http, leader), "federation_health_check_duration_seconds_count")
    # Several probe periods (0.2 s) later, the leader has probed both members again...
    await eventually(lambda: _grew(http, leader, start, by=6), what="the leader to keep probing")
    # ...and the follower has never probed anyone.
    text = await metrics(http, follower)
    assert sample_sum(text, "federation_health_check_duration_seconds_count") == 0
    assert sample_sum(text, "federation_prober_leader") == 0
    assert sample_sum(await metrics(http, leader), "federation_prober_leader") == 1
    assert leaders(replicas) == [leader]
    assert (await get_json(http, follower.url + "/health"))["prober_leader"] is False
    assert (await get_json(http, leader.url + "/health"))["prober_leader"] is True


async def _grew(http, router, start: float, by: float) -> bool:
    return sample_sum(await metrics(http, router), "federation_health_check_duration_seconds_count") >= start + by


async def test_a_crashed_leader_is_replaced_within_one_lease_period(start_devhub, start_router, redis_url, http):
    hubs = [await start_devhub("alpha", quota=20), await start_devhub("beta", quota=20)]
    replicas = await start_replicas(start_router, replica_config([member_of(hubs[0]), member_of(hubs[1])]), redis_url)
    await wait_all(http, replicas, {"alpha": "healthy", "beta": "healthy"})
    [leader] = leaders(replicas)
    [follower] = [r for r in replicas if r is not leader]
    tick = min(0.5, follower.ctx.config.health.period / 4, LEASE_TTL / 6)

    await leader.ctx.prober.stop(release=False)  # a crash: the lease is left to expire
    crashed_wall, crashed = time.time(), time.monotonic()
    # The lease was renewed at most LEASE_TTL ago; the follower tries it every tick.
    await eventually(lambda: follower.ctx.prober.is_leader, timeout=LEASE_TTL + tick + 0.5, interval=0.01,
                     what="the follower to take the prober lease")
    print(f"\nprober handover after a crash: {time.monotonic() - crashed:.3f} s "
          f"(lease {LEASE_TTL} s, tick {tick} s)")

    async def probed_again():
        members = [await members_of(http, r) for r in replicas]
        return all(m["status"]["checked_at"] > crashed_wall for ms in members for m in ms.values())
    await eventually(probed_again, timeout=5, what="statuses checked after the crash, seen by both replicas")
    assert leaders(replicas) == [follower]


# -- Redis going away -----------------------------------------------------------------------
async def test_killing_redis_mid_traffic_fails_no_launch_and_sharing_resumes(start_devhub, start_router,
                                                                             own_redis, http, caplog):
    caplog.set_level(logging.INFO, logger="binderfed.store")
    hubs = [await start_devhub("alpha", quota=100_000), await start_devhub("beta", quota=100_000)]
    member_urls = tuple(h.url + "/" for h in hubs)
    a, b = replicas = await start_replicas(
        start_router, replica_config([member_of(hubs[0]), member_of(hubs[1])], in_flight_ttl=120),
        own_redis.url)
    await wait_all(http, replicas, {"alpha": "healthy", "beta": "healthy"})

    results: list[tuple[int, str | None, str | None]] = []
    stop = asyncio.Event()

    async def load(worker: int) -> None:
        i = 0
        while not stop.is_set():
            results.append(await launch(http, replicas[(worker + i) % 2], f"/v2/gh/load/w{worker}-{i}/HEAD"))
            i += 1

    def launches_beyond(n: int) -> bool:
        return len(results) >= n

    workers = [asyncio.create_task(load(w)) for w in range(4)]
    try:
        await eventually(lambda: launches_beyond(50), what="traffic through both replicas")
        await asyncio.to_thread(own_redis.stop)   # kill -9 redis-server
        killed = time.monotonic()

        async def degraded(value: float):
            texts = [await metrics(http, r) for r in replicas]
            return all(sample_sum(t, "federation_store_degraded") == value for t in texts)
        await eventually(lambda: degraded(1.0), timeout=5, what="federation_store_degraded 1 on both replicas")
        for replica in replicas:
            assert (await get_json(http, replica.url + "/health"))["store"] == "degraded"
        # Alone, each replica probes members itself.
        await eventually(lambda: len(leaders(replicas)) == 2, timeout=LEASE_TTL + 2,
                         what="both replicas probing while Redis is away")
        probes = [sample_sum(await metrics(http, r), "federation_health_check_duration_seconds_count") for r in replicas]
        for replica, before in zip(replicas, probes):
            await eventually(lambda: _grew(http, replica, before, by=4), what="probes by each replica while alone")
        # Keep the traffic going through a few seconds of outage (and several reconnection attempts).
        down_for, during = 3.0, len(results)
        await eventually(lambda: launches_beyond(during + 200) and time.monotonic() >= killed + down_for,
                         timeout=down_for + 15, what=f"{down_for} s of traffic while Redis is away")

        await asyncio.to_thread(own_redis.start)   # same port, empty: nothing was saved
        await eventually(lambda: degraded(0.0), timeout=20, what="federation_store_degraded 0 on both replicas")
        after = len(results)
        await eventually(lambda: launches_beyond(after + 50), timeout=15, what="traffic after Redis is back")
    finally:
        stop.set()
        await asyncio.gather(*workers)

    failed = [r for r in results if r[0] != 307 or not (r[2] or "").startswith(member_urls)]
    assert not failed, f"{len(failed)} of {len(results)} launches failed, e.g. {failed[:5]}"
    logged = [r.getMessage() for r in caplog.records if r.name == "binderfed.store"]
    assert sum(m.startswith(f"store degraded: redis unreachable at {own_redis.url}") for m in logged) == 2
    assert sum(m.startswith(f"store recovered: redis reachable again at {own_redis.url}") for m in logged) == 2

    # The lease in Redis decides again: back to one prober.
    await eventually(lambda: len(leaders(replicas)) == 1, timeout=LEASE_TTL + 2, what="one leader again")
    # Sharing resumed: a launch through A is in flight in B's view.
    before = {name: m["in_flight"] for name, m in (await members_of(http, b)).items()}
    status, member, _ = await launch(http, a, "/v2/gh/after/recovery/HEAD")
    assert status == 307
    after_members = await members_of(http, b)
    assert after_members[member]["in_flight"] == before[member] + 1


async def test_a_store_error_that_is_no_outage_keeps_replicas_sharing_and_is_counted(start_devhub, start_router,
                                                                                    redis_url, http, caplog):
    hubs = [await start_devhub(name, quota=50) for name in ("alpha", "beta")]
    routers = await start_replicas(start_router, replica_config([member_of(h) for h in hubs]), redis_url)
    await wait_all(http, routers, {"alpha": "healthy", "beta": "healthy"})
    admin = redis.Redis.from_url(redis_url)
    try:
        await admin.set("binderfed:inflight-members", "not a set")     # a key of the wrong type: WRONGTYPE in Lua
        for router in routers:
            status, member, _ = await launch(http, router, "/v2/gh/org/repo/HEAD")
            assert status == 307 and member in ("alpha", "beta")          # answered from the replica's memory
            health = await get_json(http, router.url + "/health")
            assert health["store"] == "ok"                                 # not "degraded": Redis is there
            assert sample_sum(await metrics(http, router), "federation_store_errors_total") >= 1
        assert any(r.levelno == logging.ERROR and "WRONGTYPE" in r.getMessage() for r in caplog.records)
    finally:
        await admin.delete("binderfed:inflight-members")
        await admin.aclose()
    # Sharing goes on: a drain written on one replica is seen by the other at once.
    await routers[0].ctx.store.set_override("alpha", Override(draining=True, by="test"))
    await wait_all(http, routers[1:], {"alpha": "draining"}, timeout=3)
