"""Routing launches to healthy members with 307 redirects, over real sockets."""

from __future__ import annotations

import json
import time

import pytest
from yarl import URL

from federation.members import Member
from tests.conftest import fast_config, member_of, member_states
from tests.support.streams import COOKIE, sticky, sticky_member
from tests.support.waiting import eventually

LAUNCHES = [
    "/v2/gh/binder-examples/requirements/HEAD?urlpath=lab/tree/index.ipynb",
    "/build/gh/binder-examples/requirements/HEAD",
    "/v2/gist/choldgraf/4c0fee4d9b1bf2b63d1b6a6d6d3d8e0a/HEAD?labpath=a%20b.ipynb",
    "/v2/gl/gitlab-org%2Fgitlab-foss/HEAD",
    "/v2/git/https%3A%2F%2Fgithub.com%2Fbinder-examples%2Frequirements/HEAD?filepath=x.py",
    "/v2/zenodo/10.5281/zenodo.3242074/",
    "/v2/figshare/10.6084/m9.figshare.9782777.v1/",
    "/v2/hydroshare/b8f6eae9d89241cf8b5904033460af61/",
    "/v2/dataverse/10.7910/DVN/TJCLKP/",
    "/v2/ckan/https%3A%2F%2Fdemo.ckan.org%2Fdataset%2Fsample-dataset-1/",
    "/repo/binder-examples/requirements",
]


async def wait_states(http, router, expected: dict[str, str], timeout: float = 5.0):
    async def check():
        states = await member_states(http, router)
        return all(states.get(k) == v for k, v in expected.items()) and states
    return await eventually(check, timeout=timeout, what=f"member states {expected}")


@pytest.fixture
async def federation(start_devhub, start_router, make_store, http):
    """Three healthy dev members (alpha is prime) behind a router."""
    hubs = [await start_devhub("alpha", quota=20), await start_devhub("beta", quota=20),
            await start_devhub("gamma", quota=20)]
    members = [member_of(hubs[0], prime=True), member_of(hubs[1]), member_of(hubs[2])]
    router = await start_router(fast_config(members), store=make_store())
    await wait_states(http, router, {"alpha": "healthy", "beta": "healthy", "gamma": "healthy"})
    return hubs, router


@pytest.mark.parametrize("target", LAUNCHES)
async def test_every_provider_is_redirected_with_path_and_query_intact(federation, http, target):
    hubs, router = federation
    # encoded=True: send the path exactly as a browser would, without the client re-quoting it
    async with http.get(URL(router.url + target, encoded=True), allow_redirects=False) as response:
        assert response.status == 307, await response.text()
        location = response.headers["Location"]
        member = response.headers["X-Binder-Federation-Member"]
        assert response.headers["X-Binder-Federation-Reason"]
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    hub = next(h for h in hubs if h.settings.name == member)
    assert location == hub.url + target


async def test_build_stream_followed_through_redirect_reaches_a_server(federation, http):
    hubs, router = federation
    async with http.get(router.url + "/build/gh/binder-examples/requirements/HEAD",
                        headers={"Accept": "text/event-stream"}) as response:
        assert response.status == 200
        ready = None
        async for line in response.content:
            if line.startswith(b"data:"):
                event = json.loads(line[5:])
                if event.get("phase") in ("ready", "failed"):
                    ready = event
                    break
    assert ready and ready["phase"] == "ready", ready
    async with http.get(ready["url"], params={"token": ready["token"]}) as page:
        assert page.status == 200
        assert "Jupyter server" in await page.text()


async def test_down_member_is_never_chosen(federation, http):
    hubs, router = federation
    await hubs[1].stop()
    await wait_states(http, router, {"beta": "unhealthy"})
    for i in range(60):
        async with http.get(f"{router.url}/v2/gh/org{i}/repo/HEAD", allow_redirects=False) as r:
            assert r.status == 307
            assert r.headers["X-Binder-Federation-Member"] != "beta"


async def test_full_member_is_never_chosen_while_others_have_room(start_devhub, start_router, make_store, http):
    full = await start_devhub("full", quota=0)
    roomy = await start_devhub("roomy", quota=50)
    router = await start_router(fast_config([member_of(full), member_of(roomy, prime=True)]), store=make_store())
    states = await wait_states(http, router, {"full": "full", "roomy": "healthy"})
    assert states["full"] == "full"
    seen = set()
    for i in range(40):
        async with http.get(f"{router.url}/v2/gh/org/repo{i}/HEAD", allow_redirects=False) as r:
            seen.add(r.headers["X-Binder-Federation-Member"])
    assert seen == {"roomy"}


async def test_all_members_down_prime_fallback_then_503(federation, http):
    hubs, router = federation
    for hub in hubs:
        hub.set_faults(unhealthy=True)
    await wait_states(http, router, {"alpha": "unhealthy", "beta": "unhealthy", "gamma": "unhealthy"})
    async with http.get(router.url + "/v2/gh/org/repo/HEAD", allow_redirects=False) as r:
        assert r.status == 307
        assert r.headers["X-Binder-Federation-Member"] == "alpha"
        assert r.headers["X-Binder-Federation-Reason"] == "prime"
    for hub in hubs:
        await hub.stop()

    async def refused():
        async with http.get(router.url + "/v2/gh/org/repo/HEAD", allow_redirects=False) as r:
            return r.status == 503 and (r.headers.get("Retry-After"), await r.text())
    retry_after, page = await eventually(refused, what="503 once every member is unreachable")
    assert retry_after == "30"
    assert "try again" in page.lower() and "Location" not in page
    async with http.get(router.url + "/build/gh/org/repo/HEAD", allow_redirects=False) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        event = json.loads((await r.text()).removeprefix("data: "))
        assert event["phase"] == "failed" and event["status_code"] == 503 and "try again" in event["message"]


async def test_member_coming_back_is_chosen_again_within_a_probe_period(federation, http):
    hubs, router = federation
    hubs[0].set_faults(unhealthy=True)
    hubs[1].set_faults(unhealthy=True)
    await wait_states(http, router, {"alpha": "unhealthy", "beta": "unhealthy"})
    hubs[1].set_faults(unhealthy=False)
    recovered_at = time.monotonic()
    # failed_period is 0.4 s in fast_config: the member must be back within one such period
    # (plus a probe's own time); poll until a launch of a repo that maps to beta lands there.
    await wait_states(http, router, {"beta": "healthy"}, timeout=3)
    assert time.monotonic() - recovered_at < 3
    seen = set()
    for i in range(60):
        async with http.get(f"{router.url}/v2/gh/org/r{i}/HEAD", allow_redirects=False) as r:
            seen.add(r.headers["X-Binder-Federation-Member"])
    assert "beta" in seen and "alpha" not in seen


async def test_same_repository_lands_on_the_same_member(federation, start_router, make_store, http):
    hubs, _ = federation
    members = [member_of(hubs[0], prime=True), member_of(hubs[1]), member_of(hubs[2])]
    router = await start_router(fast_config(members, strategy="rendezvous"), store=make_store())
    await wait_states(http, router, {"alpha": "healthy", "beta": "healthy", "gamma": "healthy"})
    chosen = set()
    for ref in ("HEAD", "main", "v1.0", "HEAD"):
        async with http.get(f"{router.url}/v2/gh/Binder-Examples/Requirements/{ref}", allow_redirects=False) as r:
            chosen.add(r.headers["X-Binder-Federation-Member"])
    assert len(chosen) == 1


async def test_sticky_cookie_is_honoured_only_while_its_member_is_admissible(federation, http):
    hubs, router = federation
    target = "/v2/gh/org/sticky/HEAD"
    async with http.get(router.url + target, allow_redirects=False) as r:
        first = r.headers["X-Binder-Federation-Member"]
    other = next(h.settings.name for h in hubs if h.settings.name != first)
    # Only a value the router signed names a member: the bare name (or one signed for another
    # repository) does not.
    for forged in (other, sticky(router, other, "/v2/gh/org/elsewhere/HEAD")):
        async with http.get(router.url + target, allow_redirects=False, cookies={COOKIE: forged}) as r:
            assert r.status == 307 and r.headers["X-Binder-Federation-Reason"] != "cookie"
    cookies = {COOKIE: sticky(router, other, target)}
    async with http.get(router.url + target, allow_redirects=False, cookies=cookies) as r:
        assert r.headers["X-Binder-Federation-Member"] == other
        assert r.headers["X-Binder-Federation-Reason"] == "cookie"
        # The cookie handed out is the signed value again, on a fixed path.
        assert sticky_member(router, r.cookies[COOKIE].value, target) == other and r.cookies[COOKIE]["path"] == "/"
    next(h for h in hubs if h.settings.name == other).set_faults(unhealthy=True)
    await wait_states(http, router, {other: "unhealthy"})
    async with http.get(router.url + target, allow_redirects=False, cookies=cookies) as r:
        assert r.headers["X-Binder-Federation-Member"] != other
        assert r.headers["X-Binder-Federation-Reason"] != "cookie"
    async with http.get(router.url + target, allow_redirects=False,
                        cookies={"binder-federation-member": "https://evil.example"}) as r:
        assert r.status == 307 and r.headers["Location"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("path", [
    "//evil.example/",
    "/v2/gh/..%2f..%2f/evil/HEAD",
    "/v2/gh/..%2f..",
    "/v2//evil.example/x/HEAD",
    "/v2/gh/http:%2F%2Fevil.example/x/HEAD",
    "/v2/git/javascript%3Aalert(1)/HEAD",
    "/v2/gh/org/repo%00/HEAD",
    "/v2/unknown/org/repo/HEAD",
    "/v2/gh/org/repo",
    "/build/gh/%c0%ae%c0%ae/x/HEAD",
])
async def test_hostile_paths_never_leave_the_member_set(federation, http, path):
    hubs, router = federation
    members = tuple(h.url for h in hubs)
    async with http.get(URL(router.url + path, encoded=True), allow_redirects=False) as r:
        body = await r.text()
        location = r.headers.get("Location")
        assert r.status < 500
    assert location is None or location.startswith(members)
    if location is None and path.startswith("/build/"):
        assert json.loads(body.removeprefix("data: "))["phase"] == "failed"
    elif location is None and r.status != 404:
        assert r.status == 400 and "<p>" in body


async def test_bad_build_path_is_an_in_band_failed_event(federation, http):
    hubs, router = federation
    async with http.get(router.url + "/build/nope/x/y", allow_redirects=False) as r:
        assert r.status == 200
        event = json.loads((await r.text()).removeprefix("data: "))
    assert event["phase"] == "failed" and event["status_code"] == 400
    assert "unknown provider" in event["message"]


async def test_status_endpoints(federation, http):
    hubs, router = federation
    async with http.get(router.url + "/api/v1/members") as r:
        body = await r.json()
    alpha = next(m for m in body["members"] if m["name"] == "alpha")
    assert alpha["state"] == "healthy" and alpha["prime"] and alpha["status"]["quota"] == 20
    assert alpha["reason"].startswith("ok")
    async with http.get(router.url + "/active_hosts") as r:
        assert set((await r.json())["active_hosts"]) == {"alpha", "beta", "gamma"}
    async with http.get(router.url + "/health") as r:
        health = await r.json()
        assert r.status == 200 and health["healthy_members"] == 3
    async with http.get(router.url + "/v2/gh/org/repo/HEAD", allow_redirects=False):
        pass
    async with http.get(router.url + "/metrics") as r:
        text = await r.text()
    for name in ("federation_health{", "federation_health_check{", "federation_health_check_duration_seconds_bucket{",
                 "federation_redirect_count{",
                 "federation_decision_seconds_bucket{", "federation_launches_total{"):
        assert name in text, name
    async with http.get(router.url + "/") as r:
        assert r.status == 200 and "/v2/gh/" in await r.text()


async def test_explain_does_not_count_as_a_launch(federation, http):
    hubs, router = federation
    async with http.get(router.url + "/api/v1/place", params={"path": "/v2/gh/org/repo/HEAD"}) as r:
        decision = await r.json()
    assert decision["member"] in {"alpha", "beta", "gamma"} and decision["reason"]
    assert len(decision["candidates"]) == 3
    async with http.get(router.url + "/api/v1/members") as r:
        assert all(m["in_flight"] == 0 for m in (await r.json())["members"])
    async with http.get(router.url + "/api/v1/place", params={"path": "/v2/nope/x"}) as r:
        assert r.status == 400 and "unknown provider" in (await r.json())["error"]
