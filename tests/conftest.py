"""Shared fixtures: real sockets on 127.0.0.1, a real redis-server, dev members."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import aiohttp
import pytest
from aiohttp import web

from federation.config import FederationConfig, HealthSettings, LimitSettings, PolicySettings, RouterSettings
from federation.members import Member
from federation.membership import Membership
from federation.stores.memory import MemoryStore
from federation.stores.protocol import Store
from federation.stores.factory import open_store
from router.app import create_app
from router.context import CONTEXT, RouterContext
from tests.support.consul_double import ConsulDouble
from tests.support.redis_proc import RedisProcess

# Every test that takes `store_url` runs once per store implementation.
STORE_KINDS = ["memory", "redis"]


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "consul_double(**kwargs): keyword arguments of the consul_double fixture's ConsulDouble")


@pytest.fixture(scope="session")
def redis_server():
    proc = RedisProcess()
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def own_redis():
    """A redis-server of this test alone, which the test may kill and restart."""
    proc = RedisProcess()
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
async def consul_double(request):
    """A Consul agent and catalog double on 127.0.0.1 (tests/support/consul_double.py), stopped at teardown.

    `@pytest.mark.consul_double(run_checks=False)` on a test or a module passes keywords
    to `ConsulDouble`: members registered with made-up URLs need their checks left in the
    state the test sets, instead of run (which would look the names up on the network).
    """
    marker = request.node.get_closest_marker("consul_double")
    double = ConsulDouble(**(marker.kwargs if marker else {}))
    await double.start()
    yield double
    await double.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's redis-server, running (a test may have killed it) and empty."""
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture(params=STORE_KINDS)
def store_url(request) -> str:
    if request.param == "memory":
        return "memory://"
    return request.getfixturevalue("redis_url")


@pytest.fixture
def make_store(store_url):
    def make(**kwargs) -> Store:
        return open_store(store_url, **kwargs)
    return make


@dataclass
class RouterHandle:
    url: str
    app: web.Application
    runner: web.AppRunner

    @property
    def ctx(self) -> RouterContext:
        return self.app[CONTEXT]

    async def stop(self) -> None:
        await self.runner.cleanup()


def fast_config(members: list[Member], **policy) -> FederationConfig:
    """A config with short periods, suitable for tests on loopback.

    The abuse limits (on by default) are off: tests launch many times from 127.0.0.1.
    Tests of the limits turn them on (tests/router/test_limits.py).
    """
    return FederationConfig(
        members=tuple(members),
        health=HealthSettings(period=0.2, failed_period=0.4, jitter=0.0, timeout=1.0, retries=0),
        policy=replace(PolicySettings(), **policy),
        router=RouterSettings(port=0),
        limits=LimitSettings(enabled=False),
    )


@pytest.fixture
async def start_router():
    handles: list[RouterHandle] = []

    async def start(config: FederationConfig, store: Store | None = None, membership: Membership | None = None,
                    probe: bool = True, seed: int = 0, **app_kwargs) -> RouterHandle:
        # app_kwargs: more create_app() keywords, e.g. config_path= for a watched config file.
        app = create_app(config, store or MemoryStore(), membership, rng=random.Random(seed), probe=probe, **app_kwargs)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        handle = RouterHandle(f"http://127.0.0.1:{port}", app, runner)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        await handle.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture
async def start_devhub():
    """`hub = await start_devhub(name, quota=..., **settings)`: a dev member on loopback, stopped at teardown."""
    from hub.devhub import DevHub, DevHubSettings

    hubs = []

    async def start(name: str, **settings) -> "DevHub":
        settings.setdefault("build_seconds", 0.05)
        settings.setdefault("launch_seconds", 0.05)
        settings.setdefault("event_interval", 0.01)
        hub = DevHub(DevHubSettings(name=name, **settings))
        await hub.start("127.0.0.1", 0)
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        await hub.stop()


def member_of(hub, **fields) -> Member:
    return Member(name=hub.settings.name, url=hub.url, **fields)


async def member_states(http, router: RouterHandle) -> dict[str, str]:
    async with http.get(router.url + "/api/v1/members") as response:
        body = await response.json()
    return {m["name"]: m["state"] for m in body["members"]}
