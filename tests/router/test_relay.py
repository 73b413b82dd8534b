"""Stream mode: the router relays a member's /build/ stream and fails over, over real sockets."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from yarl import URL

from federation.config import ForwardModes
from federation.members import Member, Override
from hub.events import Comment, Event, SSEDecoder
from hub.failures import FailureCause
from router.clients import trusted_networks
from router.active_streams import STREAMS
from router.clients import forwarded_headers
from tests.conftest import member_of
from tests.support.replay_member import FIXTURE, RECORDED_HUB, ReplayMember
from tests.support.streams import (COOKIE, LAUNCH, mark_healthy, phases, read_events, sticky, sticky_member,
                                   stream_config)
from tests.support.waiting import eventually

async def metrics_text(http, router) -> str:
    async with http.get(router.url + "/metrics") as response:
        return await response.text()


@pytest.fixture
async def stopped_member(start_devhub):
    """A member whose address refuses connections: a dev member that was stopped."""
    hub = await start_devhub("down")
    member = member_of(hub)
    await hub.stop()
    return member


# -- failover ------------------------------------------------------------------------------


FAULTS = {
    "refused": None,
    "http_500": {"build_refuse": True},
    "full": {"build_full": True},
    "stalled": {"stall_after": "building"},
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_failover_reaches_ready_on_the_next_member(fault, start_devhub, stopped_member, start_router,
                                                         make_store, http):
    good = await start_devhub("good")
    if FAULTS[fault] is None:
        bad_member, bad_hub = stopped_member, None
    else:
        bad_hub = await start_devhub("bad")
        bad_hub.set_faults(**FAULTS[fault])
        bad_member = member_of(bad_hub)
    store = make_store()
    router = await start_router(stream_config([bad_member, member_of(good)], stall_timeout=0.5), store, probe=False)
    await mark_healthy(store, bad_member.name, "good")

    # The sticky cookie makes the failing member the first choice.
    cookies = {COOKIE: sticky(router, bad_member.name)}
    async with http.get(router.url + LAUNCH + "?urlpath=lab", cookies=cookies) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = await read_events(response)
    # The headers (and the sticky cookie) name the member that sent the first event: the
    # good one when the bad one failed before any event, else the first choice.
    named = bad_member.name if fault == "stalled" else "good"
    assert response.headers["X-Binder-Federation-Member"] == named
    assert sticky_member(router, response.cookies[COOKIE].value) == named and response.cookies[COOKIE]["path"] == "/"
    assert response.headers["X-Binder-Federation-Reason"] == ("cookie" if fault == "stalled" else "failover")

    failover = [e for e in events if "trying member" in e.data]
    assert len(failover) == 1, events
    notice = json.loads(failover[0].data)
    assert notice["message"] == f"Member {bad_member.name} failed ({_detail(fault)}); trying member good\n"
    assert failover[0].id == sticky(router, "good")  # a reconnecting EventSource sends it back as Last-Event-ID
    if fault == "stalled":
        assert notice["phase"] == "building"  # the phase the client last saw, unchanged
    ready = json.loads(events[-1].data)
    assert ready["phase"] == "ready" and ready["url"].startswith(good.url + "/user/")
    assert "failed" not in phases(events)
    # The launch went to the good member with the visitor's query intact.
    assert [r["query"] for r in good.build_requests] == ["urlpath=lab"]
    async with http.get(ready["url"], params={"token": ready["token"]}) as page:
        assert page.status == 200 and "Jupyter server" in await page.text()

    text = await metrics_text(http, router)
    cause = {"refused": "unreachable", "http_500": "http_5xx", "full": "member_full", "stalled": "stalled"}[fault]
    assert f'federation_failovers_total{{cause="{cause}"}} 1.0' in text
    assert 'federation_launch_outcomes_total{member="good",outcome="ready"} 1.0' in text
    assert 'federation_launches_total{family="build",member="good",reason="failover"} 1.0' in text
    assert f'federation_launches_total{{family="build",member="{bad_member.name}",reason="cookie"}} 1.0' in text
    assert "federation_time_to_ready_seconds_count 1.0" in text
    # The failed attempt no longer counts in flight; the one that worked does.
    assert await store.in_flight() == {"good": 1}
    # The member that reached `built`/`ready` is known to hold the image now.
    assert (await store.launch_state("gh/binder-examples/requirements")).holders == frozenset({"good"})


def _detail(fault: str) -> str:
    return {"refused": "connection refused", "http_500": "HTTP 500", "full": "member full",
            "stalled": "no news from the member in time"}[fault]


async def test_repository_build_error_is_relayed_once_and_not_retried(start_devhub, start_router, make_store, http):
    hubs = [await start_devhub(name) for name in ("alpha", "beta", "gamma")]
    for hub in hubs:
        hub.set_faults(fail_repos=["broken"])
    store = make_store()
    router = await start_router(stream_config([member_of(h) for h in hubs]), store, probe=False)
    await mark_healthy(store, "alpha", "beta", "gamma")

    async with http.get(router.url + "/build/gh/org/broken/HEAD") as response:
        chosen = response.headers["X-Binder-Federation-Member"]
        events = await read_events(response, stop_at_terminal=False)  # the stream ends after `failed`
    failed = [json.loads(e.data) for e in events if json.loads(e.data).get("phase") == "failed"]
    assert len(failed) == 1 and failed[0]["message"].startswith("Error during build")
    assert not any("trying member" in e.data for e in events)
    for hub in hubs:
        assert len(hub.build_requests) == (1 if hub.settings.name == chosen else 0), hub.settings.name
    text = await metrics_text(http, router)
    assert f'federation_launch_outcomes_total{{member="{chosen}",outcome="failed_build"}} 1.0' in text
    # Every failover cause is exported from the start, and none was counted.
    assert re.findall(r"^federation_failovers_total\{[^}]*\} (\S+)$", text, re.M) == ["0.0"] * len(FailureCause)


async def test_every_member_failing_ends_with_one_clear_failed_event(start_devhub, start_router, make_store, http):
    hubs = [await start_devhub(name) for name in ("alpha", "beta", "gamma", "delta")]
    for hub in hubs:
        hub.set_faults(build_full=True)
    store = make_store()
    router = await start_router(stream_config([member_of(h) for h in hubs], max_attempts=3), store, probe=False)
    await mark_healthy(store, "alpha", "beta", "gamma", "delta")

    async with http.get(router.url + LAUNCH) as response:
        events = await read_events(response)
    data = [json.loads(e.data) for e in events]
    assert sum("trying member" in d.get("message", "") for d in data) == 2
    final = data[-1]
    assert final["phase"] == "failed" and final["status_code"] == 503
    assert "No member of this Binder federation could start this launch" in final["message"]
    assert final["message"].count("member full") == 3 and "try again in 30 seconds" in final["message"]
    assert sorted(len(h.build_requests) for h in hubs) == [0, 1, 1, 1]  # max_attempts members, no more
    text = await metrics_text(http, router)
    assert 'outcome="failed_infra"} 1.0' in text
    assert 'federation_failovers_total{cause="member_full"} 2.0' in text


async def test_last_event_id_of_a_reconnecting_event_source_picks_its_member(start_devhub, start_router,
                                                                             make_store, http):
    hubs = [await start_devhub(name) for name in ("alpha", "beta", "gamma")]
    store = make_store()
    router = await start_router(stream_config([member_of(h) for h in hubs]), store, probe=False)
    await mark_healthy(store, "alpha", "beta", "gamma")
    async with http.get(router.url + LAUNCH) as response:
        first = response.headers["X-Binder-Federation-Member"]
        await read_events(response)
    other = next(h.settings.name for h in hubs if h.settings.name != first)
    # The cookie names the first choice; the id of the last event seen (a failover notice) wins.
    async with http.get(router.url + LAUNCH, headers={"Last-Event-ID": sticky(router, other)},
                        cookies={COOKIE: sticky(router, first)}) as response:
        assert response.headers["X-Binder-Federation-Member"] == other
        assert response.headers["X-Binder-Federation-Reason"] == "cookie"
        assert phases(await read_events(response))[-1] == "ready"
    for unsigned in ("nobody", other, sticky(router, other, "/build/gh/org/another-repo/HEAD"), other + ".AAAA"):
        # A value the router did not sign (or signed for another repository) is ignored.
        async with http.get(router.url + LAUNCH, headers={"Last-Event-ID": unsigned},
                            cookies={COOKIE: sticky(router, first)}) as response:
            assert response.headers["X-Binder-Federation-Member"] == first
            await read_events(response)


async def test_client_disconnect_closes_the_upstream_stream_promptly(start_devhub, start_router, make_store, http):
    hub = await start_devhub("slow")
    hub.set_faults(stall_after="building")  # the member holds the stream (and a build pod) open
    store = make_store()
    router = await start_router(stream_config([member_of(hub)], stall_timeout=60), store, probe=False)
    await mark_healthy(store, "slow")

    response = await http.get(router.url + LAUNCH)
    decoder = SSEDecoder()
    async for chunk in response.content.iter_any():
        if any(isinstance(i, Event) and '"building"' in i.data for i in decoder.feed(chunk)):
            break
    assert hub.build_pods == 1
    response.close()  # the visitor closes the tab
    # The member sees its client (the router) leave within a second: its build pod is gone.
    await eventually(lambda: hub.build_pods == 0, timeout=1.0, what="the member's stream to be closed")
    text = await eventually(lambda: _outcome_recorded(http, router), timeout=2.0, what="client_gone outcome")
    assert "federation_relayed_streams 0.0" in text


async def _outcome_recorded(http, router) -> str | bool:
    text = await metrics_text(http, router)
    return text if 'federation_launch_outcomes_total{member="slow",outcome="client_gone"} 1.0' in text else False


async def test_keepalive_comments_while_the_member_is_quiet(start_devhub, start_router, make_store, http):
    hub = await start_devhub("quiet")
    hub.set_faults(stall_after="building")
    store = make_store()
    router = await start_router(stream_config([member_of(hub)], stall_timeout=60, keepalive=0.3), store, probe=False)
    await mark_healthy(store, "quiet")
    decoder = SSEDecoder()
    comments = []
    async with asyncio.timeout(10):
        async with http.get(router.url + LAUNCH) as response:
            async for chunk in response.content.iter_any():
                comments += [i for i in decoder.feed(chunk) if isinstance(i, Comment)]
                if len(comments) >= 2:
                    break
    assert {c.text for c in comments} == {"keepalive"}


# -- the events themselves ---------------------------------------------------------------


async def test_recorded_binderhub_stream_is_relayed_event_for_event(start_router, make_store, http):
    recording = FIXTURE.read_bytes()
    member = ReplayMember(recording, chunk_size=1000)  # chunks cut events (and UTF-8) anywhere
    await member.start()
    try:
        store = make_store()
        replay = Member(name="replay", url=member.url, hub_url=RECORDED_HUB)
        router = await start_router(stream_config([replay]), store, probe=False)
        await mark_healthy(store, "replay")
        async with http.get(router.url + "/build/gh/binder-examples/octave/HEAD") as response:
            relayed = await read_events(response)
    finally:
        await member.stop()
    expected = [e for e in SSEDecoder().feed(recording) if isinstance(e, Event)]
    assert len(expected) == 736
    assert [e.data for e in relayed] == [e.data for e in expected]
    assert all(e.event == "message" and e.id == "" for e in relayed)


async def test_visitor_address_reaches_the_member_and_credentials_do_not(start_router, make_store, http):
    member = ReplayMember(FIXTURE.read_bytes())
    await member.start()
    visitor = {"Cookie": "binder-federation-member=replay; session=secret", "Authorization": "Bearer admin-token",
               "X-Forwarded-For": "203.0.113.9", "X-Real-Ip": "203.0.113.9", "X-Binder-Federation-Admin": "x"}
    try:
        for trusted, chain, real in [((), "127.0.0.1", "127.0.0.1"),
                                     (("127.0.0.0/8",), "203.0.113.9, 127.0.0.1", "203.0.113.9")]:
            store = make_store()
            replay = Member(name="replay", url=member.url, hub_url=RECORDED_HUB)
            router = await start_router(stream_config([replay], trusted=trusted),
                                        store, probe=False)
            await mark_healthy(store, "replay")
            url = URL(router.url + LAUNCH + "?urlpath=lab%2Ftree%2Fa.ipynb", encoded=True)  # sent as written
            async with http.get(url, headers=visitor) as response:
                assert phases(await read_events(response))[-1] == "ready"
            seen = member.requests[-1]
            assert seen["query"] == "urlpath=lab%2Ftree%2Fa.ipynb"
            headers = {k.lower(): v for k, v in seen["headers"].items()}
            assert headers["x-forwarded-for"] == chain and headers["x-real-ip"] == real
            assert headers["accept"] == "text/event-stream"
            for secret in ("cookie", "authorization", "x-binder-federation-admin"):
                assert secret not in headers
    finally:
        await member.stop()


@pytest.mark.parametrize("peer, claimed, trusted, expected", [
    ("198.51.100.1", None, (), ("198.51.100.1", "198.51.100.1")),
    ("198.51.100.1", "203.0.113.9", (), ("198.51.100.1", "198.51.100.1")),           # not believed
    ("10.0.0.5", "203.0.113.9", ("10.0.0.0/8",), ("203.0.113.9, 10.0.0.5", "203.0.113.9")),
    ("10.0.0.5", "203.0.113.9, 10.0.0.7", ("10.0.0.0/8",), ("203.0.113.9, 10.0.0.7, 10.0.0.5", "203.0.113.9")),
    ("10.0.0.5", "10.0.0.6", ("10.0.0.0/8",), ("10.0.0.6, 10.0.0.5", "10.0.0.6")),      # only proxies: leftmost
    ("10.0.0.5", "spoofed, 203.0.113.9", ("10.0.0.0/8",), ("spoofed, 203.0.113.9, 10.0.0.5", "203.0.113.9")),
    ("2001:db8::1", None, ("10.0.0.0/8",), ("2001:db8::1", "2001:db8::1")),
    # Every header line, in order; ports dropped.
    ("10.0.0.5", ["198.51.100.7", "203.0.113.9:5123"], ("10.0.0.0/8",),
     ("198.51.100.7, 203.0.113.9, 10.0.0.5", "203.0.113.9")),
    ("10.0.0.5", ["[2001:db8::7]:443, 10.0.0.9"], ("10.0.0.0/8",), ("2001:db8::7, 10.0.0.9, 10.0.0.5", "2001:db8::7")),
])
def test_forwarded_headers(peer, claimed, trusted, expected):
    headers = forwarded_headers(peer, claimed, trusted_networks(trusted))
    assert (headers["X-Forwarded-For"], headers["X-Real-Ip"]) == expected


# -- modes per path family ---------------------------------------------------------------


async def test_forward_mode_per_path_family(start_devhub, start_router, make_store, http):
    hub = await start_devhub("alpha")
    store = make_store()
    forward = ForwardModes(v2="redirect", build="stream", repo="redirect")
    router = await start_router(stream_config([member_of(hub)], forward=forward), store, probe=False)
    await mark_healthy(store, "alpha")
    async with http.get(router.url + "/v2/gh/org/repo/HEAD", allow_redirects=False) as response:
        assert response.status == 307 and response.headers["Location"] == hub.url + "/v2/gh/org/repo/HEAD"
    async with http.get(router.url + "/build/gh/org/repo/HEAD", allow_redirects=False) as response:
        assert response.status == 200 and phases(await read_events(response))[-1] == "ready"
    async with http.get(router.url + "/repo/org/repo", allow_redirects=False) as response:
        assert response.status == 307 and response.headers["Location"].startswith(hub.url)


async def test_no_member_in_stream_mode_is_an_in_band_503(start_router, make_store, http):
    router = await start_router(stream_config([]), make_store(), probe=False)
    async with http.get(router.url + LAUNCH) as response:
        assert response.status == 200
        event = json.loads((await response.text()).removeprefix("data: "))
    assert event["phase"] == "failed" and event["status_code"] == 503
    async with http.get(router.url + "/build/nope/x/y") as response:
        event = json.loads((await response.text()).removeprefix("data: "))
    assert event["phase"] == "failed" and event["status_code"] == 400


async def test_stream_lingers_after_ready_until_the_client_closes_it(start_devhub, start_router, make_store, http):
    hub = await start_devhub("alpha")
    store = make_store()
    router = await start_router(stream_config([member_of(hub)], linger=30), store, probe=False)
    await mark_healthy(store, "alpha")
    streams = router.app[STREAMS]
    response = await http.get(router.url + LAUNCH)
    assert phases(await read_events(response))[-1] == "ready"
    # As BinderHub does, the stream stays open after ready so an EventSource that does not
    # close itself does not reconnect (and launch again); it no longer counts as relayed.
    assert not response.content.at_eof() and len(streams) == 1
    text = await metrics_text(http, router)
    assert "federation_relayed_streams 0.0" in text and 'outcome="ready"} 1.0' in text
    response.close()
    await eventually(lambda: len(streams) == 0, timeout=2, what="the lingering stream to end")
    assert 'federation_launch_outcomes_total{member="alpha",outcome="client_gone"} 0.0' in await metrics_text(http, router)


async def test_failover_skips_members_drained_since_the_decision(start_devhub, start_router, make_store, http):
    hubs = {name: await start_devhub(name) for name in ("bad", "b", "c")}
    hubs["bad"].set_faults(stall_after="building")
    store = make_store()
    router = await start_router(stream_config([member_of(h) for h in hubs.values()], stall_timeout=0.5), store,
                                probe=False)
    await mark_healthy(store, "bad", "b", "c")
    params = {"path": LAUNCH, "cookie": sticky(router, "bad")}
    async with http.get(router.url + "/api/v1/place", params=params) as response:
        ranking = (await response.json())["ranking"]
    assert ranking[0] == "bad"
    drained, next_up = ranking[1], ranking[2]

    async with http.get(router.url + LAUNCH, cookies={COOKIE: sticky(router, "bad")}) as response:
        decoder, events = SSEDecoder(), []
        async for chunk in response.content.iter_any():
            new = [i for i in decoder.feed(chunk) if isinstance(i, Event)]
            if not events and new:  # the launch is placed and running on "bad": drain the next in line
                await store.set_override(drained, Override(draining=True, by="test"))
            events += new
            if phases(events)[-1:] in (["ready"], ["failed"]):
                break
    notice = next(json.loads(e.data) for e in events if "trying member" in e.data)
    assert notice["message"].endswith(f"trying member {next_up}\n")
    assert phases(events)[-1] == "ready"
    assert not hubs[drained].build_requests and len(hubs[next_up].build_requests) == 1
