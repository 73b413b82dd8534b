"""Abuse limits at the federation edge: rate limits, the repository cap, bans (router.limits).

Real routers on 127.0.0.1 with each store kind; members are dev members or, where only
placement matters, members whose status the test writes into the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import replace

import pytest
import redis.asyncio as redis
from yarl import URL

from federation import config as config_mod
from federation.config import AgentToken, BanRule, LimitSettings, RateLimit, ReportSettings
from federation.members import Member, MemberState, MemberStatus
from federation.stores.memory import MemoryStore
from federation.stores.factory import open_store
from hub.report import Capacity, MemberReport, RunningRepo, Usage, report_key, seal
from federation.spec import parse_launch
from router.clients import client_key, forwarded_chain, hop_address, trusted_networks
from router.limits import repo_cap
from tests.conftest import fast_config
from tests.support.waiting import eventually

MEMBERS = [Member(name="alpha", url="http://127.0.0.1:9/alpha"), Member(name="beta", url="http://127.0.0.1:9/beta")]
OFF = RateLimit(0)


def limited(members=MEMBERS, trusted: tuple[str, ...] = (), **limits) -> config_mod.FederationConfig:
    """`fast_config` with the limits given on (everything else off)."""
    config = fast_config(list(members))
    settings = LimitSettings(enabled=True, per_client=OFF, per_repo=OFF, repo_concurrency=0)
    return replace(config, limits=replace(settings, **limits),
                   router=replace(config.router, trusted_proxies=trusted, cookie_max_age_hours=0))


async def healthy(store, members=MEMBERS) -> None:
    for m in members:
        await store.put_status(MemberStatus(name=m.name, state=MemberState.HEALTHY, reason="ok", quota=1000,
                                            has_quota=True, checked_at=time.time()))


@pytest.fixture
async def router_with(start_router, make_store):
    """`router = await router_with(config)`: a router whose members are healthy in its store."""
    async def start(config, store=None, **kwargs):
        store = store or make_store()
        router = await start_router(config, store=store, probe=False, **kwargs)
        await healthy(store, config.members)
        return router
    return start


async def get(http, router, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, str]:
    async with http.get(URL(router.url + path, encoded=True), headers=headers or {}, allow_redirects=False) as r:
        return r.status, dict(r.headers), await r.text()


async def refused(http, router, cause: str) -> float:
    async with http.get(router.url + "/metrics") as response:
        text = await response.text()
    match = re.search(rf'^federation_refused_launches_total\{{cause="{cause}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else -1.0


# -- the defaults -----------------------------------------------------------------------------


def with_default_limits(trusted: tuple[str, ...] = ()) -> config_mod.FederationConfig:
    """The test members with the `limits` a config file that says nothing about them gets."""
    config = fast_config(list(MEMBERS))
    return replace(config, limits=config_mod.parse({}).limits,
                   router=replace(config.router, trusted_proxies=trusted, cookie_max_age_hours=0))


async def test_default_limits_serve_a_classroom_behind_one_address(router_with, http):
    # 60 students behind one NAT launch the workshop's repository within minutes.
    router = await router_with(with_default_limits())
    statuses = [(await get(http, router, "/v2/gh/workshop-org/python-101/main"))[0] for _ in range(60)]
    assert statuses == [307] * 60
    assert await refused(http, router, "rate_limit_client") == 0


async def test_default_limits_serve_a_viral_repository(router_with, http):
    # 1,000 launches of one repository from 200 addresses (behind the trusted load balancer).
    router = await router_with(with_default_limits(trusted=("127.0.0.1",)))
    statuses = [(await get(http, router, f"/build/gh/viral/notebook/HEAD",
                           {"X-Forwarded-For": f"198.51.{i % 200 // 100}.{i % 100}"}))[0] for i in range(1000)]
    assert statuses.count(307) == 1000
    assert sum([await refused(http, router, cause) for cause in ("rate_limit_client", "rate_limit_repo", "repo_cap")]) == 0


async def test_head_requests_neither_count_nor_place(router_with, http):
    router = await router_with(limited(per_client=RateLimit(1, 60), banned=BANS))
    for path in ("/v2/gh/org/repo/HEAD", "/build/gh/org/repo/HEAD", "/repo/org/repo"):
        async with http.head(router.url + path, allow_redirects=False) as response:
            assert response.status == 200 and "Location" not in response.headers
    async with http.head(router.url + "/v2/gh/evil-org/x/HEAD", allow_redirects=False) as response:
        assert response.status == 403
    assert sum((await router.ctx.store.in_flight()).values()) == 0         # nothing placed
    assert (await get(http, router, "/v2/gh/org/repo/HEAD"))[0] == 307       # the one launch of the budget
    assert (await get(http, router, "/v2/gh/org/repo/HEAD"))[0] == 429


# -- per client ------------------------------------------------------------------------------


async def test_per_client_limit_answers_429_with_retry_after_then_refuses_build_in_band(router_with, http, caplog):
    router = await router_with(limited(per_client=RateLimit(3, 60)))
    for i in range(3):
        status, headers, _ = await get(http, router, f"/v2/gh/org/repo{i}/HEAD")
        assert status == 307
    caplog.set_level(logging.INFO, logger="binderfed.router")
    status, headers, body = await get(http, router, "/v2/gh/org/another/HEAD?urlpath=lab")
    assert status == 429
    assert headers["Content-Type"].startswith("text/html")
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert "Too many launches from your address" in body and "at most 3 launches in 1 minute" in body
    assert "Location" not in headers
    # /build/ is answered in band, as BinderHub does for EventSource clients.
    status, headers, body = await get(http, router, "/build/gh/org/another/HEAD")
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert '"phase": "failed"' in body and '"status_code": 429' in body and "Too many launches" in body
    assert int(headers["Retry-After"]) >= 1
    assert await refused(http, router, "rate_limit_client") == 2
    assert any("rate_limit_client" in r.getMessage() and "gh/org/another/HEAD" in r.getMessage()
               for r in caplog.records)


async def test_x_forwarded_for_is_believed_only_from_trusted_proxies(router_with, http):
    # Untrusted: a visitor cannot get a fresh budget by claiming another address.
    router = await router_with(limited(per_client=RateLimit(2, 60)))
    statuses = [(await get(http, router, "/v2/gh/org/repo/HEAD", {"X-Forwarded-For": f"198.51.100.{i}"}))[0]
                for i in range(4)]
    assert statuses == [307, 307, 429, 429]
    # Trusted (127.0.0.1 is the proxy in front): each forwarded visitor has its own budget.
    proxied = await router_with(limited(per_client=RateLimit(2, 60), trusted=("127.0.0.0/8",)))
    for client in ("198.51.100.1", "198.51.100.2"):
        statuses = [(await get(http, proxied, "/v2/gh/org/repo/HEAD", {"X-Forwarded-For": f"{client}, 10.0.0.1"}))[0]
                    for _ in range(3)]
        # 10.0.0.1 is not a trusted proxy: it is the visitor, the first hop is what it claimed.
        assert statuses == [307, 307, 429] if client == "198.51.100.1" else statuses == [429, 429, 429]


async def test_every_x_forwarded_for_line_counts_and_ports_do_not_make_new_clients(router_with, http, redis_url):
    # 127.0.0.1 is the trusted proxy in front, and it appends its own X-Forwarded-For line
    # (naming the real client) to whatever line the client sent itself.
    router = await router_with(limited(per_client=RateLimit(2, 60), trusted=("127.0.0.0/8",)),
                               store=open_store(redis_url))

    async def launch(*lines: str) -> int:
        headers = [("X-Forwarded-For", line) for line in lines]
        async with http.get(router.url + "/v2/gh/org/repo/HEAD", headers=headers, allow_redirects=False) as r:
            return r.status

    # A client spoofing a first line is still itself: it can neither evade its own limit...
    assert [await launch(f"198.51.100.{i}", "203.0.113.5") for i in range(3)] == [307, 307, 429]
    # ... nor spend the budget of the address it named: that client still has all of its own.
    assert [await launch("198.51.100.0") for _ in range(3)] == [307, 307, 429]
    # `ip:port` entries are the address alone: one budget, whatever the source port.
    assert [await launch(f"192.0.2.9:{port}") for port in (1111, 2222, 3333)] == [307, 307, 429]
    assert [await launch(f"[2001:db8::9]:{port}") for port in (1, 2, 3)] == [307, 307, 429]


def test_client_address_and_keys():
    trusted = trusted_networks(("10.0.0.0/8", "2001:db8::/32", "not-a-network"))
    assert forwarded_chain("10.1.2.3", "203.0.113.9, 10.9.9.9", trusted) == (
        ["203.0.113.9", "10.9.9.9", "10.1.2.3"], "203.0.113.9")
    assert forwarded_chain("203.0.113.1", "10.0.0.1", trusted) == (["203.0.113.1"], "203.0.113.1")
    assert forwarded_chain("::ffff:10.1.2.3", "203.0.113.9", trusted)[1] == "203.0.113.9"   # v4-mapped peer
    assert forwarded_chain("10.1.2.3", "10.0.0.7", trusted)[1] == "10.0.0.7"   # all trusted: the first hop
    assert forwarded_chain(None, "203.0.113.9", trusted) == ([], "unknown")
    assert client_key("2001:db8:1:2:3:4:5:6") == client_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("192.0.2.1:5555") == client_key("192.0.2.1:6666") == "192.0.2.1"
    assert [hop_address(h) for h in ("192.0.2.1:80", "[2001:db8::1]:443", "2001:db8::1", " 192.0.2.1 ", "x:y")] == [
        "192.0.2.1", "2001:db8::1", "2001:db8::1", "192.0.2.1", "x:y"]
    # Every X-Forwarded-For line counts, in order: the proxy's appended line names the client.
    assert forwarded_chain("10.1.2.3", ["198.51.100.7", "203.0.113.9"], trusted)[1] == "203.0.113.9"
    assert client_key(" garbage\x00" * 20) != ""
    assert len(client_key("x" * 1000)) <= 64


# -- per repository and the cap -----------------------------------------------------------------


async def test_per_repo_limit_counts_every_ref_and_client(router_with, http):
    router = await router_with(limited(per_repo=RateLimit(3, 600), trusted=("127.0.0.1",)))
    statuses = [(await get(http, router, f"/v2/gh/Org/Repo/ref{i}", {"X-Forwarded-For": f"192.0.2.{i}"}))[0]
                for i in range(3)]
    assert statuses == [307, 307, 307]
    status, headers, body = await get(http, router, "/v2/gh/org/repo.git/HEAD", {"X-Forwarded-For": "192.0.2.99"})
    assert status == 429 and "This repository has been launched too often" in body
    assert 590 <= int(headers["Retry-After"]) <= 600
    assert (await get(http, router, "/v2/gh/org/other/HEAD"))[0] == 307
    assert await refused(http, router, "rate_limit_repo") == 1


async def test_repo_cap_counts_launches_in_progress_until_their_ttl(router_with, http):
    router = await router_with(limited(repo_concurrency=2, repo_launch_ttl=1.0))
    assert [(await get(http, router, f"/build/gh/org/repo/{ref}"))[0] for ref in ("a", "b")] == [307, 307]
    status, headers, body = await get(http, router, "/v2/gh/org/repo/c")
    assert status == 429 and "already has 2 or more launches in progress" in body
    assert headers["Retry-After"] == str(router.ctx.config.router.retry_after)
    assert (await get(http, router, "/v2/gh/org/elsewhere/HEAD"))[0] == 307   # other repositories are not capped
    # Once the launches stop counting (repo_launch_ttl), the repository launches again.
    await eventually(lambda: _status(http, router, "/v2/gh/org/repo/c", 307), timeout=5, what="the cap to lift")
    assert await refused(http, router, "repo_cap") >= 1


def overrides(*rules: tuple[str, int]) -> tuple[config_mod.RepoCapRule, ...]:
    return config_mod.parse({"limits": {"repo_concurrency_overrides": [
        {"pattern": p, "concurrency": c} for p, c in rules]}}).limits.repo_concurrency_overrides


def test_repo_cap_overrides_match_like_binderhubs_spec_config():
    limits = LimitSettings(repo_concurrency=100, repo_concurrency_overrides=overrides(
        ("^gh/MNGuenther/hackanexoplanet-env", 300), ("gh/petlja/", 50), ("^gh/petlja/closed", 0),
        ("^git/https://gitlab.example/", 7)))

    def cap(path: str) -> int:
        return repo_cap(limits, parse_launch(path))

    assert cap("/v2/gh/mnguenther/HackAnExoplanet-env/main") == 300        # ignoring case
    assert cap("/v2/gh/petlja/course/HEAD") == 50                           # re.match: from the start
    assert cap("/v2/gh/petlja/closed-course/HEAD") == 0                     # the last match wins; 0: no cap
    assert cap("/v2/gh/other/petlja/HEAD") == 100                           # not at the start: the default
    assert cap("/v2/git/https%3A%2F%2Fgitlab.example%2Fr.git/HEAD") == 7    # percent-decoded too
    assert repo_cap(replace(limits, enabled=False), parse_launch("/v2/gh/petlja/course/HEAD")) == 0


async def test_repo_cap_override_for_a_workshop_with_no_default_cap(router_with, http):
    router = await router_with(limited(repo_concurrency=0, repo_concurrency_overrides=overrides(("^gh/workshop/", 3))))
    statuses = [(await get(http, router, f"/v2/gh/workshop/day-1/ref{i}"))[0] for i in range(4)]
    assert statuses == [307, 307, 307, 429]
    assert [(await get(http, router, "/v2/gh/org/repo/HEAD"))[0] for _ in range(5)] == [307] * 5   # no cap
    assert await refused(http, router, "repo_cap") == 1


async def _status(http, router, path: str, expected: int) -> bool:
    return (await get(http, router, path))[0] == expected


async def test_limits_are_shared_by_replicas_through_redis(start_router, redis_server, http):
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    config = limited(per_client=RateLimit(4, 60), repo_concurrency=3)
    routers = []
    for _ in range(2):
        store = open_store(redis_server.url)
        routers.append(await start_router(config, store=store, probe=False))
        await healthy(store)
    one, two = routers
    assert [(await get(http, r, "/v2/gh/org/repo/HEAD"))[0] for r in (one, two, one)] == [307, 307, 307]
    status, _, body = await get(http, two, "/v2/gh/org/repo/HEAD")
    assert status == 429 and "in progress" in body                  # three launches counted, by two replicas
    assert (await get(http, one, "/v2/gh/org/x/HEAD"))[0] == 429     # the fifth launch of 127.0.0.1 in the window
    assert (await refused(http, one, "rate_limit_client"), await refused(http, two, "repo_cap")) == (1, 1)


@pytest.mark.parametrize("replicas", [1, 2])
async def test_a_concurrent_burst_never_gets_past_the_repo_cap(start_router, redis_url, http, replicas):
    # 40 launches of one repository at once, split across replicas sharing one Redis: each
    # replica reads the same "0 in progress" before any of them records, so only a cap
    # checked in the step that counts the launch holds.
    config = limited(repo_concurrency=5)
    routers = []
    for _ in range(replicas):
        store = open_store(redis_url)
        routers.append(await start_router(config, store=store, probe=False))
        await healthy(store)

    async def launch(i: int) -> int:
        router = routers[i % replicas]
        async with http.get(router.url + f"/v2/gh/org/viral/ref{i}", allow_redirects=False) as response:
            return response.status

    statuses = await asyncio.gather(*(launch(i) for i in range(40)))
    assert sorted(statuses) == [307] * 5 + [429] * 35
    assert sum([await refused(http, router, "repo_cap") for router in routers]) == 35
    assert (await get(http, routers[0], "/v2/gh/org/other/HEAD"))[0] == 307       # other repositories launch


async def test_the_repo_cap_holds_in_memory_for_a_concurrent_burst(start_router, http):
    store = MemoryStore()
    router = await start_router(limited(repo_concurrency=3), store=store, probe=False)
    await healthy(store)
    answers = await asyncio.gather(*(get(http, router, f"/build/gh/org/viral/r{i}") for i in range(20)))
    assert sorted(status for status, _, _ in answers) == [200] * 17 + [307] * 3
    assert sum('"status_code": 429' in body for _, _, body in answers) == 17   # /build/: refused in band


async def test_repo_cap_counts_running_servers_from_agent_reports(start_router, redis_server, http, tmp_path):
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    token = "alpha-report-token-0123456789abcdef"
    (tmp_path / "alpha.token").write_text(token)
    config = limited(repo_concurrency=5)
    config = replace(config, reports=ReportSettings(enabled=True, url=redis_server.url, period=0.05, max_age=60,
                                                    members=(AgentToken("alpha", token_file=str(tmp_path / "alpha.token")),)))
    store = open_store("memory://")
    router = await start_router(config, store=store, probe=False)
    await healthy(store)
    assert (await get(http, router, "/v2/gh/org/repo/HEAD"))[0] == 307      # one launch in progress
    report = MemberReport(member="alpha", timestamp=time.time(), agent_version="test",
                          capacity=Capacity(nodes=1, pods=100), usage=Usage(user_pods=4),
                          running=(RunningRepo("gh/org/repo/HEAD", 3), RunningRepo("gh/Org/Repo/main", 1),
                                   RunningRepo("gh/org/other/HEAD", 50), RunningRepo("not a spec", 9)))
    inbox = redis.Redis.from_url(redis_server.url)
    try:
        await inbox.set(report_key("alpha"), seal(report, token))
        # 1 launch in progress + 4 running servers of gh/org/repo (both refs) = the cap of 5.
        await eventually(lambda: _status(http, router, "/v2/gh/org/repo/HEAD", 429), timeout=5,
                         what="the running servers of the report to count")
        assert (await get(http, router, "/v2/gh/org/third/HEAD"))[0] == 307
    finally:
        await inbox.aclose()


# -- bans -------------------------------------------------------------------------------------


BANS = (BanRule(re.compile(r"^gh/evil-org/", re.I), "This repository mines cryptocurrency."),
        BanRule(re.compile(r"github\.com/miner/", re.I)))


async def test_banned_repository_gets_403_with_the_configured_message(router_with, http, caplog):
    router = await router_with(replace(limited(), limits=LimitSettings(enabled=False, banned=BANS)))
    caplog.set_level(logging.INFO, logger="binderfed.router")
    status, headers, body = await get(http, router, "/v2/gh/evil-org/miner/HEAD")
    assert status == 403 and "This repository mines cryptocurrency." in body and "Location" not in headers
    # Case and escaping do not get past a ban; /build/ is refused in band.
    status, headers, body = await get(http, router, "/build/gh/Evil-Org/x/HEAD")
    assert status == 200 and '"status_code": 403' in body and "mines cryptocurrency" in body
    status, _, body = await get(http, router, "/v2/git/https%3A%2F%2Fgithub.com%2Fminer%2Frepo/HEAD")
    assert status == 403 and "cannot be launched on this Binder federation" in body   # the default message
    assert (await get(http, router, "/v2/gh/good-org/repo/HEAD"))[0] == 307
    assert (await get(http, router, "/repo/evil-org/miner"))[0] == 403                 # legacy links too
    assert await refused(http, router, "banned") == 4
    assert any("banned" in r.getMessage() and "evil-org" in r.getMessage() for r in caplog.records)


async def test_a_ban_applies_to_every_alias_of_a_repository(router_with, http):
    bans = (BanRule(re.compile(r"^gh/org/", re.I), "Banned org."), BanRule(re.compile(r"^gist/evil-user/", re.I)))
    router = await router_with(replace(limited(), limits=LimitSettings(enabled=False, banned=bans)))
    for alias in ("/v2/gh/Org/x/HEAD", "/v2/git/https%3A%2F%2Fgithub.com%2Forg%2Fx/HEAD",
                  "/v2/git/https%3A%2F%2Fwww.github.com%2FORG%2Fx.git/main", "/build/git/http%3A%2F%2Fgithub.com%2Forg%2Fy/a",
                  "/v2/gist/evil-user/abc123", "/v2/git/https%3A%2F%2Fgist.github.com%2Fevil-user%2Fabc123.git/HEAD"):
        status, _, body = await get(http, router, alias)
        assert status == 403 or (status == 200 and '"status_code": 403' in body), alias
    assert (await get(http, router, "/v2/git/https%3A%2F%2Fgithub.com%2Fother%2Fx/HEAD"))[0] == 307


async def test_per_repo_budgets_count_every_alias_as_one_repository(router_with, http):
    router = await router_with(limited(per_repo=RateLimit(3, 600)))
    aliases = ["/v2/gh/org/repo/HEAD", "/v2/git/https%3A%2F%2Fgithub.com%2FOrg%2FRepo.git/main", "/repo/org/repo"]
    assert [(await get(http, router, a))[0] for a in aliases] == [307, 307, 307]
    assert (await get(http, router, "/v2/git/https%3A%2F%2Fwww.github.com%2Forg%2Frepo/v2"))[0] == 429


async def test_a_ban_added_to_the_config_file_applies_without_a_restart(router_with, http, tmp_path):
    path = tmp_path / "federation.yaml"
    members = "".join(f"  - name: {m.name}\n    url: {m.url}\n" for m in MEMBERS)
    path.write_text(f"members:\n{members}limits:\n  enabled: false\n")
    router = await router_with(config_mod.load(path), config_path=path)
    assert (await get(http, router, "/v2/gh/spam/repo/HEAD"))[0] == 307
    path.write_text(f"members:\n{members}limits:\n  enabled: false\n  banned:\n"
                    "    - pattern: '^gh/spam/'\n      message: Banned for spam.\n")
    await eventually(lambda: _status(http, router, "/v2/gh/spam/repo/HEAD", 403), timeout=5,
                     what="the new ban to apply")
    assert "Banned for spam." in (await get(http, router, "/v2/gh/spam/repo/HEAD"))[2]
    assert (await get(http, router, "/v2/gh/other/repo/HEAD"))[0] == 307


# -- what counts ------------------------------------------------------------------------------


async def test_in_stream_mode_the_launch_page_is_not_counted_but_bans_apply(router_with, http):
    config = limited(per_client=RateLimit(1, 60), banned=BANS)
    config = replace(config, router=replace(config.router, forward="stream",
                                            stream=replace(config.router.stream, linger=0)))
    router = await router_with(config)
    for _ in range(3):   # the router's own launch page: no placement, nothing counted
        status, _, body = await get(http, router, "/v2/gh/org/repo/HEAD")
        assert status == 200 and "<html" in body.lower()
    assert (await get(http, router, "/v2/gh/evil-org/x/HEAD"))[0] == 403
    # The launch is the page's /build/ stream: the second one is over the limit (members here
    # are not reachable, so the first one fails over and ends with a 503 event of its own).
    _, _, body = await get(http, router, "/build/gh/org/repo/HEAD")
    assert '"status_code": 429' not in body
    _, _, body = await get(http, router, "/build/gh/org/repo/HEAD")
    assert '"status_code": 429' in body


async def test_limits_off_and_every_refusal_cause_exported(router_with, http):
    router = await router_with(limited())  # enabled, but each limit at 0
    assert all([(await get(http, router, "/v2/gh/org/repo/HEAD"))[0] == 307 for _ in range(5)])
    for cause in ("rate_limit_client", "rate_limit_repo", "repo_cap", "banned", "bad_path", "no_member"):
        assert await refused(http, router, cause) == 0


def test_limits_config_defaults_and_demo():
    limits = config_mod.parse({}).limits
    # Nothing counts by default: members rate-limit visitors themselves (see the classroom below).
    assert limits.enabled and limits.per_client == RateLimit(0, 600) and limits.per_repo == RateLimit(0, 600)
    assert limits.repo_concurrency == 0 and limits.repo_concurrency_overrides == () and limits.banned == ()
    assert limits == LimitSettings()
    assert config_mod.load(config_mod.DEMO_CONFIG).limits.enabled is False
    parsed = config_mod.parse({"limits": {"per_client": {"launches": 5}, "banned": [{"pattern": "^gh/x/"}]}}).limits
    assert parsed.per_client == RateLimit(5, 600) and parsed.ban_for("gh/X/y/HEAD") is not None
    with pytest.raises(config_mod.ConfigError, match=r"limits\.banned\[0\]\.pattern"):
        config_mod.parse({"limits": {"banned": [{"pattern": "(unclosed"}]}})
    with pytest.raises(config_mod.ConfigError, match=r"limits\.per_repo\.window"):
        config_mod.parse({"limits": {"per_repo": {"launches": 5, "window": 0}}})


# -- one admission pipeline: the redirect and the stream relay refuse alike -------------------


def _answer(status: int, headers: dict, body: str) -> tuple:
    """What a client sees of a refusal, with numbers that depend on the moment (seconds to wait) masked."""
    return status, headers.get("Content-Type"), "Retry-After" in headers, re.sub(r"\d+ seconds", "N seconds", body)


@pytest.mark.parametrize("cause", ["banned", "rate_limit_client", "repo_cap", "no_member"])
async def test_relay_and_redirect_refuse_a_build_identically(router_with, http, cause):
    limits = {"banned": {"banned": BANS}, "rate_limit_client": {"per_client": RateLimit(1, 60)},
              "repo_cap": {"repo_concurrency": 1, "repo_launch_ttl": 60.0}, "no_member": {}}[cause]
    answers = []
    for forward in ("redirect", "stream"):
        config = limited(members=() if cause == "no_member" else MEMBERS, **limits)
        config = replace(config, router=replace(config.router, forward=forward,
                                                stream=replace(config.router.stream, linger=0, max_attempts=1)))
        router = await router_with(config)  # no_member: a federation without members
        path = "/build/gh/evil-org/x/HEAD" if cause == "banned" else "/build/gh/org/repo/HEAD"
        if cause in ("rate_limit_client", "repo_cap"):
            await get(http, router, path)  # the one launch the limit lets through (relayed: it fails, unreachable)
        answers.append(_answer(*await get(http, router, path)))
        assert await refused(http, router, cause) >= 1  # (routers on one Redis share the windows)
    redirect, stream = answers
    assert redirect == stream
    assert redirect[0] == 200 and redirect[1].startswith("text/event-stream")  # in band, as BinderHub answers
    expected = {"banned": 403, "rate_limit_client": 429, "repo_cap": 429, "no_member": 503}[cause]
    assert f'"status_code": {expected}' in redirect[3]
