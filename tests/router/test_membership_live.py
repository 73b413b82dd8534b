"""Members joining and leaving a running router: config file edits and Consul registrations."""

from __future__ import annotations

import itertools
import logging
import textwrap
from dataclasses import replace

from yarl import URL

from federation import config as config_mod
from federation.config import ConsulSettings
from federation.member_cli import Registration, deregister_member, register_member
from router.sources import SOURCES
from tests.conftest import fast_config, member_states
from tests.support.consul_double import ConsulDouble
from tests.support.waiting import eventually

HEALTH = """\
health:
  period: 0.2
  failed_period: 0.4
  jitter: 0
  timeout: 1
  retries: 0
limits:
  enabled: false  # these tests launch many times from 127.0.0.1
"""

_repos = itertools.count()


async def launch(http, router, repo: str | None = None) -> tuple[int, str | None]:
    """One launch without a sticky cookie: (HTTP status, member it was sent to)."""
    http.cookie_jar.clear()
    repo = repo or f"org/repo{next(_repos)}"
    async with http.get(f"{router.url}/v2/gh/{repo}/HEAD", allow_redirects=False) as response:
        return response.status, response.headers.get("X-Binder-Federation-Member")


async def launches_to(http, router, count: int = 12) -> set[str | None]:
    return {(await launch(http, router))[1] for _ in range(count)}


def yaml_members(*members: tuple[str, str] | tuple[str, str, float], extra: str = "") -> str:
    text = "members:\n" if members else "members: []\n"
    for m in members:
        text += f"  - name: {m[0]}\n    url: {m[1]}\n" + (f"    weight: {m[2]}\n" if len(m) > 2 else "")
    return text + HEALTH + textwrap.dedent(extra)


async def start_from_file(start_router, path, store=None):
    return await start_router(config_mod.load(path), store=store, config_path=path)


async def metric(http, router, sample: str) -> float | None:
    async with http.get(router.url + "/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
    return None


# -- the config file ---------------------------------------------------------------------------


async def test_member_added_to_the_yaml_receives_launches_within_a_second(start_devhub, start_router, http, tmp_path):
    alpha, beta = await start_devhub("alpha"), await start_devhub("beta")
    path = tmp_path / "federation.yaml"
    path.write_text(yaml_members(("alpha", alpha.url)))
    router = await start_from_file(start_router, path)
    await eventually(lambda: _state_is(http, router, "alpha", "healthy"), what="alpha healthy")
    assert await launch(http, router) == (307, "alpha")

    # Take alpha out of rotation and add beta, in one edit, while serving.
    path.write_text(yaml_members(("alpha", alpha.url, 0), ("beta", beta.url)))

    async def beta_takes_launches():
        return await launch(http, router) == (307, "beta")

    await eventually(beta_takes_launches, timeout=1.0, interval=0.02, what="beta to receive launches after the edit")
    assert await launches_to(http, router) == {"beta"}
    assert await metric(http, router, 'federation_config_reload_total{result="ok"}') == 2.0


async def _state_is(http, router, name: str, state: str) -> bool:
    return (await member_states(http, router)).get(name) == state


async def test_broken_yaml_edit_keeps_the_old_config_and_logs_the_key(start_devhub, start_router, http, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    alpha = await start_devhub("alpha")
    path = tmp_path / "federation.yaml"
    path.write_text(yaml_members(("alpha", alpha.url)))
    router = await start_from_file(start_router, path)
    await eventually(lambda: _state_is(http, router, "alpha", "healthy"), what="alpha healthy")

    path.write_text(yaml_members(("alpha", alpha.url), ("beta", "not a url")))
    await eventually(lambda: metric(http, router, 'federation_config_reload_total{result="error"}'), timeout=3,
                     what="the reload error metric")
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"{path}: members[1].url" in error.getMessage()
    assert (error.file, error.key) == (str(path), "members[1].url")
    assert await metric(http, router, "federation_config_last_reload_successful") == 0.0
    # Still serving from the last good config.
    assert await member_states(http, router) == {"alpha": "healthy"}
    assert await launches_to(http, router, 4) == {"alpha"}


async def test_removed_member_leaves_rotation_and_its_in_flight_launches_are_kept(start_devhub, start_router, http,
                                                                                   tmp_path, make_store):
    alpha, beta = await start_devhub("alpha"), await start_devhub("beta")
    path = tmp_path / "federation.yaml"
    # A long in-flight TTL: the launches sent to beta stay counted for the whole test.
    policy = "policy:\n  in_flight_ttl: 300\n  strategy: random\n"
    path.write_text(yaml_members(("alpha", alpha.url), ("beta", beta.url), extra=policy))
    store = make_store()
    router = await start_from_file(start_router, path, store=store)
    await eventually(lambda: _state_is(http, router, "beta", "healthy"), what="beta healthy")
    await eventually(lambda: _state_is(http, router, "alpha", "healthy"), what="alpha healthy")
    sent = [(await launch(http, router))[1] for _ in range(30)]
    to_beta = sent.count("beta")
    assert to_beta > 0

    path.write_text(yaml_members(("alpha", alpha.url), extra=policy))
    await eventually(lambda: _names(http, router, ["alpha"]), timeout=3, what="beta to leave")
    assert await launches_to(http, router) == {"alpha"}
    assert (await store.in_flight()).get("beta") == to_beta

    path.write_text(yaml_members(("alpha", alpha.url), ("beta", beta.url), extra=policy))
    await eventually(lambda: _names(http, router, ["alpha", "beta"]), timeout=3, what="beta back")
    async with http.get(router.url + "/api/v1/members") as response:
        beta_json = next(m for m in (await response.json())["members"] if m["name"] == "beta")
    assert beta_json["in_flight"] == to_beta


async def _names(http, router, expected: list[str]) -> bool:
    async with http.get(router.url + "/api/v1/members") as response:
        return [m["name"] for m in (await response.json())["members"]] == expected


async def test_settings_are_swapped_and_restart_only_ones_are_not(start_devhub, start_router, http, tmp_path, caplog):
    alpha = await start_devhub("alpha")
    path = tmp_path / "federation.yaml"
    path.write_text(yaml_members(("alpha", alpha.url)))
    router = await start_from_file(start_router, path)
    port = router.ctx.config.router.port
    path.write_text(yaml_members(("alpha", alpha.url), extra="policy:\n  strategy: rendezvous\nrouter:\n  port: 9999\n"))

    async def strategy():
        async with http.get(router.url + "/api/v1/members") as response:
            return (await response.json())["strategy"] == "rendezvous"

    await eventually(strategy, timeout=3, what="the new strategy in force")
    assert router.ctx.config.router.port == port
    assert any("router.port changed" in r.getMessage() and "restart" in r.getMessage() for r in caplog.records)
    # The prober runs with the health settings of the file.
    assert router.ctx.prober.settings.period == 0.2


async def test_a_reload_of_members_and_settings_together_is_never_seen_half_applied(start_router, redis_url,
                                                                                     tmp_path):
    """Each config pairs a member with a cookie name: a launch answered while reloads come
    and go must get a member and a cookie of the same config, never one of each."""
    import asyncio
    import time

    import aiohttp

    from federation.members import MemberState, MemberStatus
    from federation.stores.factory import open_store

    path = tmp_path / "federation.yaml"
    texts = {name: yaml_members((name, f"http://127.0.0.1:9/{name}"),
                                extra=f"router:\n  sticky_cookie: cookie-{name}\n")
             for name in ("alpha", "beta")}
    path.write_text(texts["alpha"])
    store = open_store(redis_url)  # a store that really awaits: launches interleave with reloads
    router = await start_router(config_mod.load(path), store=store, config_path=path, probe=False)
    for name in ("alpha", "beta"):
        await store.put_status(MemberStatus(name=name, state=MemberState.HEALTHY, reason="ok", quota=10**6,
                                            has_quota=True, checked_at=time.time()))
    file = router.app[SOURCES].file
    seen: set[tuple[str | None, str]] = set()
    answered = [0]
    stop = asyncio.Event()

    async def launches(http: aiohttp.ClientSession, k: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            async with http.get(f"{router.url}/build/gh/org/r{k}-{i}/HEAD", allow_redirects=False) as response:
                cookie = response.headers.get("Set-Cookie", "").split("=", 1)[0]
                seen.add((response.headers.get("X-Binder-Federation-Member"), cookie))
                answered[0] += 1

    async def reloads() -> None:
        for i in range(40):
            path.write_text(texts["beta" if i % 2 == 0 else "alpha"])
            await file.check()
            before = answered[0]  # a few launches under each config before the next reload
            await eventually(lambda: answered[0] >= before + 3, timeout=10, what="launches between two reloads")
        stop.set()

    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with asyncio.timeout(60):
            await asyncio.gather(reloads(), *(launches(http, k) for k in range(8)))
    assert seen <= {("alpha", "cookie-alpha"), ("beta", "cookie-beta")}, seen
    assert len(seen) == 2  # both configs were in force while launches ran


# -- Consul -----------------------------------------------------------------------------------


def consul_yaml(double: ConsulDouble, *members, extra: str = "") -> str:
    # The dev members listen on loopback: an address entry admits them (a name pattern never would).
    return yaml_members(*members, extra=f"consul:\n  enabled: true\n  url: {double.url}\n  wait: 5\n"
                                        "  allowed_hosts: ['127.0.0.1']\n" + extra)


async def test_consul_registered_member_is_routed_to_and_deregistered_one_is_not(
        start_devhub, start_router, http, tmp_path, consul_double):
    alpha, gesis = await start_devhub("alpha"), await start_devhub("gesis")
    path = tmp_path / "federation.yaml"
    path.write_text(consul_yaml(consul_double, ("alpha", alpha.url)))
    router = await start_from_file(start_router, path)
    await eventually(lambda: _state_is(http, router, "alpha", "healthy"), what="alpha healthy")

    # What `binderfed member register` runs, with a fast Consul HTTP check on gesis's /health.
    await register_member(consul_double.url, Registration(name="gesis", url=gesis.url, check_interval="0.1s"))
    await eventually(lambda: _state_is(http, router, "gesis", "healthy"), timeout=5, what="gesis healthy")

    async def gesis_chosen():
        return "gesis" in await launches_to(http, router, 4)

    await eventually(gesis_chosen, timeout=5, what="a launch routed to gesis")
    async with http.get(router.url + "/api/v1/members") as response:
        entry = next(m for m in (await response.json())["members"] if m["name"] == "gesis")
    assert entry["source"] == "consul" and entry["url"] == gesis.url

    assert await deregister_member(consul_double.url, "gesis")
    await eventually(lambda: _names(http, router, ["alpha"]), timeout=5, what="gesis to leave")
    assert await launches_to(http, router, 20) == {"alpha"}


async def test_consul_unreachable_leaves_routing_unchanged(start_devhub, start_router, http, tmp_path, consul_double):
    gesis = await start_devhub("gesis")
    path = tmp_path / "federation.yaml"
    path.write_text(consul_yaml(consul_double))
    await register_member(consul_double.url, Registration(name="gesis", url=gesis.url, check=False))
    router = await start_from_file(start_router, path)
    await eventually(lambda: _state_is(http, router, "gesis", "healthy"), timeout=5, what="gesis healthy")
    assert await launches_to(http, router, 4) == {"gesis"}

    await consul_double.stop()
    source = router.app[SOURCES].consul
    await eventually(lambda: source.failures >= 2, timeout=10, what="failed Consul queries")
    assert await launches_to(http, router, 8) == {"gesis"}
    assert await member_states(http, router) == {"gesis": "healthy"}
    assert await metric(http, router, 'federation_membership_source_up{source="consul"}') == 0.0
    assert await metric(http, router, 'federation_membership_source_members{source="consul"}') == 1.0


async def test_file_declaration_wins_over_a_consul_registration(start_devhub, start_router, http, tmp_path,
                                                                  consul_double):
    declared, registered = await start_devhub("gesis"), await start_devhub("gesis-other")
    path = tmp_path / "federation.yaml"
    path.write_text(consul_yaml(consul_double, ("gesis", declared.url)))
    await register_member(consul_double.url, Registration(name="gesis", url=registered.url, check=False))
    router = await start_from_file(start_router, path)

    async def gesis_entry():
        async with http.get(router.url + "/api/v1/members") as response:
            return next(m for m in (await response.json())["members"] if m["name"] == "gesis")

    entry = await gesis_entry()
    assert (entry["url"], entry["source"]) == (declared.url, "config")

    path.write_text(consul_yaml(consul_double))  # the operator removes it from the file
    await eventually(lambda: _source_of(gesis_entry, "consul"), timeout=3, what="Consul's gesis to take over")
    assert (await gesis_entry())["url"] == registered.url


async def _source_of(entry, source: str) -> bool:
    return (await entry())["source"] == source


async def test_enabling_consul_by_reload_starts_watching(start_devhub, start_router, http, tmp_path, consul_double):
    alpha, gesis = await start_devhub("alpha"), await start_devhub("gesis")
    await register_member(consul_double.url, Registration(name="gesis", url=gesis.url, check=False))
    path = tmp_path / "federation.yaml"
    path.write_text(yaml_members(("alpha", alpha.url)))
    router = await start_from_file(start_router, path)
    assert await _names(http, router, ["alpha"])
    path.write_text(consul_yaml(consul_double, ("alpha", alpha.url)))
    await eventually(lambda: _names(http, router, ["alpha", "gesis"]), timeout=5, what="gesis after enabling Consul")
    path.write_text(yaml_members(("alpha", alpha.url)))
    await eventually(lambda: _names(http, router, ["alpha"]), timeout=5, what="gesis gone after disabling Consul")


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
        assert response.status == 307
        assert response.headers["Location"].startswith(f"http://localhost:{URL(listed.url).port}/")


async def _healthy(http, router, name: str) -> bool:
    return (await member_states(http, router)).get(name) == "healthy"
