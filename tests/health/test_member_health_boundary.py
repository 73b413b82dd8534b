"""What a member's /health may say, and what it can never do to the federation.

A member is a server someone else runs: its `/health` document is read by the real
prober over a real socket, written to a real Redis store and read back by a live
router. Whatever the document says (numbers past int64, nesting deeper than Python's
recursion limit, not JSON at all), the member gets a status in the prober's own words,
every replica keeps answering launches, and a status nobody refreshes stops counting.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from federation.config import HealthSettings
from federation.members import Member, MemberState, MemberStatus
from federation.membership import Membership
from federation.stores.factory import open_store
from health.prober import Prober
from hub.client import HubClient
from hub.models import MAX_COUNT
from router.app import create_app
from tests.conftest import fast_config, member_states
from tests.support.servers import serve_on_loopback
from tests.support.waiting import eventually

MARKER = "EVIL-MARKER"  # text a hostile member puts in its answers: never in a public reason
DEEP = "[" * 100_000 + "]" * 100_000


class ScriptedMember:
    """A member on 127.0.0.1 whose /health answers whatever the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b'{"ok": true, "checks": []}'
        self.content_type = "application/json"
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> "ScriptedMember":
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/versions", self._versions)
        self.runner, self.url = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def answer(self, body: bytes | str, status: int = 200) -> None:
        self.body = body.encode() if isinstance(body, str) else body
        self.status = status

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(body=self.body, status=self.status, content_type=self.content_type)

    async def _versions(self, request: web.Request) -> web.Response:
        return web.json_response({"binderhub": "1.0.0", "builder_info": {"build_image": "r2d", "junk": {"x": MARKER}}})


def health(quota=10, total=0, **extra) -> str:
    return json.dumps({"ok": True, "checks": [
        {"service": "JupyterHub API", "ok": True},
        {"service": "Pod quota", "ok": True, "quota": quota, "total_pods": total, "build_pods": 0,
         "user_pods": total, "_ignore_failure": True, **extra}]})


@pytest.fixture
async def scripted():
    members: list[ScriptedMember] = []

    async def start() -> ScriptedMember:
        members.append(await ScriptedMember().start())
        return members[-1]

    yield start
    for member in members:
        await member.stop()


# -- bounded numbers, on two replicas sharing one Redis ---------------------------------------


async def test_a_quota_past_int64_is_refused_and_no_replica_stops_launching(scripted, start_router, redis_url, http):
    good, bad = await scripted(), await scripted()
    good.answer(health(quota=100))
    bad.answer(health(quota=100))
    members = [Member(name="good", url=good.url), Member(name="bad", url=bad.url)]
    config = fast_config(members)
    prober_side = await start_router(config, store=open_store(redis_url))
    reader = await start_router(config, store=open_store(redis_url), probe=False)   # reads what the leader wrote
    expected = {"good": "healthy", "bad": "healthy"}
    await eventually(lambda: _states_are(http, reader, expected), timeout=10, what=f"states {expected}")

    bad.answer(health(quota=2**63, total=2**64))
    await eventually(lambda: _states_are(http, reader, {"good": "healthy", "bad": "unhealthy"}), timeout=10,
                     what="the member reporting 2**63 pods to be unhealthy")
    for router in (prober_side, reader):
        async with http.get(router.url + "/api/v1/members") as response:
            assert response.status == 200
            bad_member = next(m for m in (await response.json())["members"] if m["name"] == "bad")
        assert bad_member["reason"] == (f"bad answer: {bad.url}/health: health 'Pod quota' field 'quota' is not an "
                                        f"integer from 0 to {MAX_COUNT}")
        for _ in range(5):
            async with http.get(router.url + "/v2/gh/org/repo/HEAD", allow_redirects=False) as response:
                assert response.status == 307 and response.headers["X-Binder-Federation-Member"] == "good"
        async with http.get(router.url + "/health") as response:
            assert response.status == 200
    # A replica started afterwards (nothing cached) reads the shared store just as well.
    fresh = await start_router(config, store=open_store(redis_url), probe=False)
    async with http.get(fresh.url + "/v2/gh/org/repo/HEAD", allow_redirects=False) as response:
        assert response.status == 307


async def _states_are(http, router, expected: dict[str, str]) -> bool:
    return await member_states(http, router) == expected


async def test_a_status_with_numbers_out_of_range_in_redis_is_skipped_not_served(start_router, redis_url, http,
                                                                               caplog):
    # What an older or broken replica (or anyone with write access to Redis) might leave there.
    import redis.asyncio as redis

    members = [Member(name="alpha", url="http://127.0.0.1:9/a"), Member(name="beta", url="http://127.0.0.1:9/b")]
    store = open_store(redis_url)
    router = await start_router(fast_config(members), store=store, probe=False)
    now = time.time()
    await store.put_status(MemberStatus(name="alpha", state=MemberState.HEALTHY, reason="ok", quota=50,
                                        has_quota=True, checked_at=now))
    raw = redis.Redis.from_url(redis_url)
    try:
        await raw.hset("binderfed:status", "beta", json.dumps(
            {"state": "healthy", "reason": "ok", "quota": 2**63, "has_quota": True, "total_pods": 0, "checked_at": now}))
    finally:
        await raw.aclose()
    assert await member_states(http, router) == {"alpha": "healthy", "beta": "unknown"}
    async with http.get(router.url + "/v2/gh/org/repo/HEAD", allow_redirects=False) as response:
        assert response.status == 307 and response.headers["X-Binder-Federation-Member"] == "alpha"
    assert any("ignoring unreadable status of member beta" in r.getMessage() for r in caplog.records)


# -- probe errors always end in a status ----------------------------------------------------------


async def test_deeply_nested_health_makes_the_member_unhealthy_instead_of_freezing_it(scripted, start_router, http):
    member = await scripted()
    member.answer(health())
    router = await start_router(fast_config([Member(name="deep", url=member.url)]))
    await eventually(lambda: _states_are(http, router, {"deep": "healthy"}), timeout=10, what="deep healthy")
    member.answer(DEEP)
    await eventually(lambda: _states_are(http, router, {"deep": "unhealthy"}), timeout=10,
                     what="the deeply nested answer to make the member unhealthy")
    async with http.get(router.url + "/api/v1/members") as response:
        (only,) = (await response.json())["members"]
    assert only["reason"] == f"bad answer: {member.url}/health: health answer is nested too deeply"
    member.answer(health())
    await eventually(lambda: _states_are(http, router, {"deep": "healthy"}), timeout=10, what="deep healthy again")


async def test_a_members_words_stay_in_the_log_not_in_its_public_reason(scripted, start_router, http, caplog):
    member = await scripted()
    member.answer(f"<html>{MARKER}: buy now at evil.example</html>")
    router = await start_router(fast_config([Member(name="chatty", url=member.url)]))
    await eventually(lambda: _states_are(http, router, {"chatty": "unhealthy"}), timeout=10, what="chatty unhealthy")
    for path in ("/api/v1/members", "/status"):
        async with http.get(router.url + path) as response:
            assert response.status == 200
            assert MARKER not in await response.text()
    async with http.get(router.url + "/api/v1/members") as response:
        assert (await response.json())["members"][0]["reason"].endswith("health answer is not JSON")
    assert any(MARKER in r.getMessage() and "chatty" in r.getMessage() for r in caplog.records)  # logs may


async def test_failed_check_names_of_a_member_are_not_repeated_publicly(scripted, start_router, http):
    member = await scripted()
    member.answer(json.dumps({"ok": False, "checks": [{"service": "JupyterHub API", "ok": False},
                                                      {"service": f"{MARKER} visit evil.example", "ok": False}]}), 503)
    router = await start_router(fast_config([Member(name="m", url=member.url)]))
    await eventually(lambda: _states_are(http, router, {"m": "unhealthy"}), timeout=10, what="m unhealthy")
    async with http.get(router.url + "/api/v1/members") as response:
        body = await response.json()
    assert body["members"][0]["reason"] == "failed checks: JupyterHub API, another check"
    assert MARKER not in json.dumps(body)    # nor in what is kept of /versions


# -- a status nobody refreshes stops counting ----------------------------------------------------


async def test_a_status_older_than_max_status_age_reads_unknown_and_gets_no_launches(start_router, make_store, http):
    members = [Member(name="fresh", url="http://127.0.0.1:9/f"), Member(name="stale", url="http://127.0.0.1:9/s")]
    config = fast_config(members)
    config = replace(config, health=replace(config.health, max_status_age=30))
    store = make_store()
    router = await start_router(config, store=store, probe=False)
    now = time.time()
    for name, checked in (("fresh", now), ("stale", now - 31)):
        await store.put_status(MemberStatus(name=name, state=MemberState.HEALTHY, reason="ok", quota=100,
                                            has_quota=True, checked_at=checked))
    async with http.get(router.url + "/api/v1/members") as response:
        by_name = {m["name"]: m for m in (await response.json())["members"]}
    assert by_name["fresh"]["state"] == "healthy"
    assert by_name["stale"]["state"] == "unknown"
    assert by_name["stale"]["reason"] == "no probe result in the last 30 s (last known: healthy)"
    for repo in range(20):   # whatever affinity would have chosen
        async with http.get(router.url + f"/v2/gh/org/repo{repo}/HEAD", allow_redirects=False) as response:
            assert response.status == 307 and response.headers["X-Binder-Federation-Member"] == "fresh"


def test_max_status_age_defaults_to_four_probe_periods_at_least_a_minute():
    assert HealthSettings().status_max_age == 120.0                          # 4 x failed_period 30
    assert HealthSettings(period=5, failed_period=5).status_max_age == 60.0
    assert HealthSettings(max_status_age=15).status_max_age == 15


# -- property-based: any /health body ------------------------------------------------------------


JSON_LEAF = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.sampled_from([2**63, 2**63 - 1, 2**64, -(2**63) - 1, 10**400, -1, MAX_COUNT, MAX_COUNT + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.just(MARKER),
)
JSON_VALUE = st.recursive(JSON_LEAF, lambda children: st.lists(children, max_size=4)
                          | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=20)
COUNT = st.one_of(JSON_LEAF, st.integers(min_value=0, max_value=MAX_COUNT))
QUOTA_CHECK = st.fixed_dictionaries(
    {"service": st.sampled_from(["Pod quota", MARKER])},
    optional={"ok": JSON_LEAF, "quota": COUNT, "total_pods": COUNT, "build_pods": COUNT, "user_pods": COUNT,
              "_ignore_failure": JSON_LEAF})
OTHER_CHECK = st.fixed_dictionaries({"service": st.one_of(st.sampled_from(["JupyterHub API", "Docker registry"]),
                                                          st.just(MARKER), JSON_LEAF)},
                                    optional={"ok": JSON_LEAF, "_ignore_failure": JSON_LEAF})
HEALTH_LIKE = st.fixed_dictionaries(
    {"ok": st.one_of(st.booleans(), JSON_LEAF)},
    optional={"checks": st.one_of(st.lists(st.one_of(QUOTA_CHECK, OTHER_CHECK, JSON_VALUE), max_size=5), JSON_VALUE)})


def _encode(document) -> bytes:
    return json.dumps(document).encode()   # NaN and Infinity as Python writes them (not strict JSON)


BODIES = st.one_of(
    HEALTH_LIKE.map(_encode),
    JSON_VALUE.map(_encode),
    st.binary(max_size=200),
    # Around and past the recursion limit of json.loads (1000 frames by default).
    st.integers(min_value=1, max_value=3000).map(lambda n: ("[" * n + "]" * n).encode()),
    st.integers(min_value=1, max_value=3000).map(lambda n: ('{"a":' * n + "1" + "}" * n).encode()),
    st.integers(min_value=30, max_value=300).map(
        lambda n: b'{"ok": true, "checks": [' + b'{"service": "x", "ok": true},' * n + b'{}]}'),
)


class FuzzRig:
    """A scripted member, a prober writing to Redis and a live router reading it, on a loop of their own."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="health-fuzz", daemon=True)

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        self.member = await ScriptedMember().start()
        self.members = (Member(name="fuzzed", url=self.member.url), Member(name="steady", url="http://127.0.0.1:9/s"))
        self.store = open_store(self.redis_url)
        config = fast_config(list(self.members))
        self.app = create_app(config, self.store, probe=False)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.prober = Prober(self.store, HubClient(self.session), Membership(self.members), config.health, headroom=0,
                             rng=random.Random(0))

    async def probe(self, status: int, body: bytes) -> tuple[MemberStatus, list[tuple[str, int, str]]]:
        self.member.answer(body, status)
        await self.store.put_status(MemberStatus(name="steady", state=MemberState.HEALTHY, reason="ok", quota=10,
                                                 has_quota=True, checked_at=time.time()))
        status_ = await self.prober.probe_once(self.members[0])
        answers = []
        for path in ("/api/v1/members", "/v2/gh/org/repo/HEAD", "/status", "/health", "/metrics"):
            async with self.session.get(URL(self.url + path), allow_redirects=False) as response:
                answers.append((path, response.status, await response.text()))
        return status_, answers

    def stop(self) -> None:
        async def cleanup() -> None:
            await self.session.close()
            await self.runner.cleanup()
            await self.member.stop()
        self.run(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def fuzz_rig(redis_server):
    if redis_server.proc is None:
        redis_server.start()
    rig = FuzzRig(redis_server.url)
    rig.start()
    yield rig
    rig.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(body=BODIES, status=st.sampled_from([200, 503]))
def test_any_health_body_gives_a_bounded_status_and_every_endpoint_keeps_answering(fuzz_rig, body, status):
    result, answers = fuzz_rig.run(fuzz_rig.probe(status, body))
    assert result.name == "fuzzed" and result.checked_at > 0
    assert result.state in (MemberState.HEALTHY, MemberState.FULL, MemberState.UNHEALTHY)
    for count in (result.quota or 0, result.total_pods, result.build_pods, result.user_pods):
        assert 0 <= count <= MAX_COUNT
    assert MARKER not in result.reason and len(result.reason) < 500
    for path, code, text in answers:
        assert code < 500 or (code == 503 and path.startswith("/v2/")), (path, code, text[:300])
        assert MARKER not in text, path
    members = json.loads(answers[0][2])["members"]
    assert {m["name"]: m["state"] for m in members}["fuzzed"] == result.state.value   # read back through Redis
