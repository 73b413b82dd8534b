"""Members the router reaches: the admission gate at work in a live router.

The config file is trusted for the addresses it names (the dev members here listen on
loopback); a name that resolves to a private or loopback address is reached only when
the operator named that host, whatever a registration says (hub.resolver). Consul
registrations through the gate: tests/router/test_membership_live.py.
"""

from __future__ import annotations

import pytest
from yarl import URL

from federation.members import Member
from hub.client import MemberUnreachable
from tests.conftest import fast_config, member_states
from tests.support.waiting import eventually


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
