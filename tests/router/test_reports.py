"""The router reading member agent reports from Redis: cache locality, capacity, rejections.

Reports reach the router through the real redis-server (the agent's delivery path);
the router's own store is each store kind in turn.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as redis
from kubernetes import client

from federation.config import AgentToken, ReportSettings
from federation.members import Member, MemberState, MemberStatus
from hub.agent import Agent, AgentSettings, RedisOutbox
from hub.agent.kube import KubeReader
from hub.report import Capacity, CachedImage, MemberReport, Usage, report_key, seal
from tests.conftest import fast_config, member_of
from tests.support import k8s_cluster as cluster
from tests.support.k8s_double import KubeDouble
from tests.support.waiting import eventually

TOKENS = {"alpha": "alpha-report-token-0123456789abcdef", "beta": "beta-report-token-0123456789abcdef"}
PATH_A = "/v2/" + cluster.SPEC_A
REPO_A = "gh/binder-examples/requirements"


@pytest.fixture
async def inbox(redis_url):
    """A client on the Redis the agents write to (flushed first)."""
    connection = redis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


def with_reports(config, redis_url: str, tmp_path, max_age: float = 60.0):
    refs = []
    for name, token in TOKENS.items():
        path = tmp_path / f"{name}.token"
        path.write_text(token + "\n")
        refs.append(AgentToken(member=name, token_file=str(path)))
    return replace(config, reports=ReportSettings(enabled=True, url=redis_url, period=0.05, max_age=max_age,
                                                  members=tuple(refs)))


def report_for(member: str, *, age: float = 0.0, specs=(cluster.SPEC_A,), pods: int = 100, used: int = 0) -> MemberReport:
    return MemberReport(
        member=member, timestamp=time.time() - age, agent_version="test",
        capacity=Capacity(nodes=1, pods=pods, cpu=8.0, memory=32 * 1024 ** 3),
        usage=Usage(user_pods=used, build_pods=0),
        cached_images=tuple(CachedImage(spec=s, slug="unused-000000", nodes=1) for s in specs),
    )


async def place(http, router, path: str = PATH_A) -> tuple[str, str]:
    async with http.get(router.url + "/api/v1/place", params={"path": path}) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    return body["member"], body["reason"]


async def agent_reports(http, router, member: str, result: str) -> float:
    async with http.get(router.url + "/metrics") as response:
        text = await response.text()
    pattern = rf'^federation_agent_reports_total\{{member="{re.escape(member)}",result="{result}"\}} (\S+)$'
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
async def federation(start_router, make_store, redis_server, inbox, tmp_path):
    """Two healthy members with room, a router reading agent reports; (router, affinity member, other)."""
    members = [Member(name="alpha", url="http://127.0.0.1:9/alpha"), Member(name="beta", url="http://127.0.0.1:9/beta")]
    store = make_store()
    config = with_reports(fast_config(members), redis_server.url, tmp_path, max_age=60.0)
    router = await start_router(config, store=store, probe=False)
    for m in members:
        await store.put_status(MemberStatus(name=m.name, state=MemberState.HEALTHY, reason="ok", quota=100,
                                            has_quota=True, checked_at=time.time()))
    return router


async def affinity_and_other(http, router) -> tuple[str, str]:
    member, reason = await place(http, router)
    assert reason == "affinity"
    return member, ("beta" if member == "alpha" else "alpha")


async def test_agent_report_makes_the_router_prefer_the_member_holding_the_image(
        federation, http, redis_server, inbox):
    """End to end: the real agent reads the Kubernetes double, publishes, the router places by it."""
    router = federation
    _, holder = await affinity_and_other(http, router)
    double = KubeDouble()
    await double.start()
    cluster.populate(double)
    settings = AgentSettings(member=holder, image_prefix=cluster.PREFIX, namespace=cluster.NAMESPACE,
                             specs=(cluster.SPEC_B,), period=0.1, request_timeout=5.0)
    agent = Agent(settings, KubeReader(lambda: client.Configuration(host=double.url), 5.0),
                  RedisOutbox(redis_server.url, holder), lambda: TOKENS[holder])
    await agent.start()
    try:
        async def by_cache():
            return await place(http, router) == (holder, "cache")
        await eventually(by_cache, timeout=10, what=f"launches of {REPO_A} placed on {holder} by cache")
        # The configured spec (capitals and all) and the Zenodo record the agent learned from its pod.
        assert await place(http, router, "/v2/gh/org/repo/HEAD") == (holder, "cache")
        assert await place(http, router, "/v2/" + cluster.SPEC_Z) == (holder, "cache")
        assert (await router.ctx.store.launch_state(REPO_A)).holders == frozenset({holder})
        assert await agent_reports(http, router, holder, "accepted") >= 1
        assert router.ctx.reports.report(holder).usage.user_pods == cluster.EXPECTED.user_pods
    finally:
        await agent.stop()
        await double.stop()


async def test_report_older_than_the_age_limit_is_ignored(federation, http, inbox):
    router = federation
    chosen, other = await affinity_and_other(http, router)
    await inbox.set(report_key(other), seal(report_for(other, age=61), TOKENS[other]))

    async def counted():
        return await agent_reports(http, router, other, "stale") == 1
    await eventually(counted, what="the stale report counted")
    assert await place(http, router) == (chosen, "affinity")
    assert router.ctx.reports.report(other) is None


async def test_report_signed_with_a_wrong_token_is_rejected(federation, http, inbox):
    router = federation
    chosen, other = await affinity_and_other(http, router)
    await inbox.set(report_key(other), seal(report_for(other), "not-the-token-of-this-member-0000"))

    async def counted():
        return await agent_reports(http, router, other, "bad_signature") == 1
    await eventually(counted, what="the forged report counted")
    assert await place(http, router) == (chosen, "affinity")
    # Another member's valid token does not make it valid either.
    await inbox.set(report_key(other), seal(report_for(other), TOKENS[chosen]))

    async def counted_twice():
        return await agent_reports(http, router, other, "bad_signature") == 2
    await eventually(counted_twice, what="the second forged report counted")
    assert await place(http, router) == (chosen, "affinity")


async def test_reports_of_unknown_members_and_garbage_are_ignored(federation, http, inbox):
    router = federation
    chosen, other = await affinity_and_other(http, router)
    await inbox.set(report_key("stranger"), seal(report_for("stranger"), "stranger-token-0123456789abcdef"))
    await inbox.set(report_key(other), b"\x00 not json")

    async def counted():
        return (await agent_reports(http, router, "", "unknown_member") == 1
                and await agent_reports(http, router, other, "malformed") == 1)
    await eventually(counted, what="the unknown and the malformed report counted")
    # A report moved to another member's key is not taken as that member's.
    await inbox.set(report_key(other), seal(report_for(chosen), TOKENS[chosen]))

    async def counted_moved():
        return await agent_reports(http, router, other, "malformed") == 2
    await eventually(counted_moved, what="the moved report counted")
    assert await place(http, router) == (chosen, "affinity")


async def test_cache_entries_expire_with_the_report(start_router, make_store, redis_server, inbox, tmp_path, http):
    members = [Member(name="alpha", url="http://127.0.0.1:9/alpha"), Member(name="beta", url="http://127.0.0.1:9/beta")]
    store = make_store()
    router = await start_router(with_reports(fast_config(members), redis_server.url, tmp_path, max_age=1.5),
                                store=store, probe=False)
    for m in members:
        await store.put_status(MemberStatus(name=m.name, state=MemberState.HEALTHY, reason="ok", quota=100,
                                            has_quota=True, checked_at=time.time()))
    chosen, other = await affinity_and_other(http, router)
    await inbox.set(report_key(other), seal(report_for(other), TOKENS[other]))

    async def by_cache():
        return await place(http, router) == (other, "cache")
    await eventually(by_cache, what="placement by the fresh report")
    # The agent goes silent: once its report passes the age limit, placement forgets it.

    async def back_to_affinity():
        return await place(http, router) == (chosen, "affinity")
    await eventually(back_to_affinity, timeout=10, what="the report's cache entries expiring")


async def test_capacity_comes_from_the_report_when_health_has_no_quota(
        start_devhub, start_router, make_store, redis_server, inbox, tmp_path, http):
    alpha = await start_devhub("alpha", report_quota=False)
    beta = await start_devhub("beta", report_quota=False)
    config = with_reports(fast_config([member_of(alpha), member_of(beta)]), redis_server.url, tmp_path)
    router = await start_router(config, store=make_store())
    await inbox.set(report_key("alpha"), seal(report_for("alpha", pods=40, used=12), TOKENS["alpha"]))
    await inbox.set(report_key("beta"), seal(report_for("beta", pods=5, used=5), TOKENS["beta"]))

    async def statuses():
        async with http.get(router.url + "/api/v1/members") as response:
            body = await response.json()
        found = {m["name"]: m for m in body["members"]}
        if found["alpha"]["status"]["quota"] == 40 and found["beta"]["state"] == "full":
            return found
        return None
    found = await eventually(statuses, timeout=10, what="capacity from agent reports")
    assert found["alpha"]["state"] == "healthy"
    assert found["alpha"]["status"]["total_pods"] == 12
    assert "agent" in found["alpha"]["reason"]
    assert found["alpha"]["free"] == 28
    # beta's nodes are full: every launch goes to alpha.
    assert (await place(http, router, "/v2/gh/some/repo/HEAD"))[0] == "alpha"


async def test_documented_redis_acls_confine_each_agent_to_its_own_keys(redis_server, inbox):
    """The ACL lines of docs/agent.md, run as written against the real redis-server."""
    from health.report_ingest import RedisReportInbox

    doc = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    lines = [line.split() for line in doc.splitlines() if line.startswith("ACL SETUSER")]
    assert [line[2] for line in lines] == ["agent-gesis", "router-reports"]
    for line in lines:
        await inbox.execute_command(*[word.replace(">PASSWORD", ">pw") for word in line])
    base = f"127.0.0.1:{redis_server.port}/0"
    try:
        agent = RedisOutbox(f"redis://agent-gesis:pw@{base}", "gesis")
        intruder = RedisOutbox(f"redis://agent-gesis:pw@{base}", "ovh")
        await agent.publish(seal(report_for("gesis"), "t" * 32), 60)
        await agent.save_specs({"slug-abcdef": '{"spec": "gh/a/b/HEAD", "seen": 1}'}, [])
        assert await agent.load_specs()
        with pytest.raises(redis.ResponseError):
            await intruder.publish("forged", 60)
        reader = RedisReportInbox(f"redis://router-reports:pw@{base}")
        assert list(await reader.read()) == ["gesis"]
        with pytest.raises(redis.ResponseError):
            await reader.redis.set(report_key("gesis"), "overwritten")
        for client_ in (agent, intruder, reader):
            await client_.close()
    finally:
        await inbox.execute_command("ACL", "DELUSER", "agent-gesis", "router-reports")
