"""Members the router reaches: the admission gate at work in a live router.

The config file is trusted for the addresses it names (the dev members here listen on
loopback); a name that resolves to a private or loopback address is reached only when
the operator named that host, whatever a registration says (hub.resolver).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from yarl import URL

from federation.config import ConsulSettings
from federation.members import Member
from federation.member_cli import Registration, register_member
from hub.client import MemberUnreachable
from tests.conftest import fast_config, member_states
from tests.support.consul_double import ConsulDouble
from tests.support.waiting import eventually


@pytest.fixture
async def consul_double():
    double = ConsulDouble(run_checks=False)
    await double.start()
    yield double
    await double.stop()


async def test_a_name_resolving_to_loopback_is_reached_only_when_the_operator_named_it(start_devhub, start_router,
                                                                                      http):
    hub = await start_devhub("local")
    port = URL(hub.url).port
    # The operator's file names the host "localhost": probes go there.
    named = await start_router(fast_config([Member(name="local", url=f"http://localhost:{port}")]))
    await eventually(lambda: _healthy(http, named, "local"), timeout=10, what="the named member to be probed healthy")
    # A router whose file names the member by address only: a call to the name is refused at connect time.
    other = await start_router(fast_config([Member(name="local", url=hub.url)]))
    with pytest.raises(MemberUnreachable) as info:
        await other.ctx.client.health(f"http://localhost:{port}", timeout=5)
    assert info.value.cause == "dns" and "resolves only to private, loopback or link-local addresses" in str(info.value)
    report = await other.ctx.client.health(hub.url, timeout=5)       # the address it named is reached
    assert report.ok


async def _healthy(http, router, name: str) -> bool:
    return (await member_states(http, router)).get(name) == "healthy"


async def test_a_registration_on_a_listed_name_is_probed_and_one_off_the_list_never_is(start_devhub, start_router,
                                                                                      http, consul_double):
    listed, unlisted = await start_devhub("listed"), await start_devhub("unlisted")
    config = fast_config([])
    consul = ConsulSettings(enabled=True, url=consul_double.url, wait=5, allowed_hosts=("localhost",))
    router = await start_router(replace(config, consul=consul))
    await register_member(consul_double.url, Registration(name="listed", url=f"http://localhost:{URL(listed.url).port}",
                                                          check=False))
    await register_member(consul_double.url, Registration(name="unlisted", url=unlisted.url, check=False))
    await eventually(lambda: _healthy(http, router, "listed"), timeout=10, what="the listed registration healthy")
    assert set(await member_states(http, router)) == {"listed"}   # 127.0.0.1 is not on the list
    async with http.get(router.url + "/v2/gh/org/repo/HEAD", allow_redirects=False) as response:
        assert response.status == 307 and response.headers["Location"].startswith(f"http://localhost:{URL(listed.url).port}/")
