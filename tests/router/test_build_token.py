"""Stream mode and build tokens: a launch from the router's launch page gets the member's
build token as a launch from the member's own page would, and so is not held to the
member's per-visitor rate limit (hub/build_tokens.py, router/launch_page.py, router/relay.py).

Dev members issue and check tokens and rate-limit /build/ per visitor as BinderHub does.
"""

from __future__ import annotations

import json
import re
import time

import jwt
import pytest
from yarl import URL

from federation.members import Member
from hub.build_tokens import BuildTokens, token_from_page, token_origin
from tests.conftest import member_of
from tests.support.streams import mark_healthy, read_events, stream_config

SPEC = "gh/binder-examples/requirements/HEAD"
HOUR = 3600


def build_url_of(page: str) -> str:
    match = re.search(r'<script id="launch-config" type="application/json">(.*?)</script>', page, re.S)
    assert match, page
    return json.loads(match.group(1))["build_url"]


async def launch_from_page(http, router, query: str = "") -> dict:
    """What the launch page does in a browser: load /v2/, open its /build/ URL; the final event."""
    async with http.get(URL(router.url + f"/v2/{SPEC}" + (f"?{query}" if query else ""), encoded=True)) as response:
        assert response.status == 200
        build_url = build_url_of(await response.text())
    return await launch(http, router, build_url)


async def launch(http, router, path: str) -> dict:
    async with http.get(URL(router.url + path, encoded=True), headers={"Accept": "text/event-stream"}) as response:
        events = await read_events(response)
    return json.loads(events[-1].data)


@pytest.fixture
async def limited_router(start_devhub, start_router, make_store):
    """Routers in stream mode in front of dev members that allow one launch per visitor per hour."""
    async def make(*names: str, **settings):
        hubs = [await start_devhub(name, rate_limit=1, rate_limit_period=HOUR, **settings) for name in names]
        store = make_store()
        router = await start_router(stream_config([member_of(h) for h in hubs]), store, probe=False)
        await mark_healthy(store, *names)
        return router, hubs
    return make


async def test_launches_from_the_launch_page_pass_the_members_token(limited_router, http):
    router, (hub,) = await limited_router("alpha")
    for _ in range(2):   # twice for one visitor, with a rate limit of one per hour
        final = await launch_from_page(http, router, "urlpath=lab")
        assert final["phase"] == "ready", final
        seen = hub.build_requests[-1]
        assert seen["build_token"] == "valid" and seen["x_real_ip"] == "127.0.0.1"
        assert seen["query"].startswith("urlpath=lab&build_token=")   # the visitor's query, then the member's token
    # Without the page's token (an API client calling /build/ itself) the member's limit holds:
    # the first launch is within it, the second is refused in band.
    assert (await launch(http, router, f"/build/{SPEC}"))["phase"] == "ready"
    refused = await launch(http, router, f"/build/{SPEC}")
    assert refused["phase"] == "failed" and refused["status_code"] == 429
    assert refused["message"].startswith("Rate limit exceeded")
    assert hub.build_requests[-1]["build_token"] is None


async def test_the_routers_token_is_tied_to_spec_and_origin_and_never_reaches_a_member(limited_router, http):
    router, (hub,) = await limited_router("alpha")
    async with http.get(router.url + f"/v2/{SPEC}") as response:
        build_url = build_url_of(await response.text())
    token = URL(build_url).query["build_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == SPEC and claims["origin"] == URL(router.url).raw_authority
    assert 295 <= claims["exp"] - time.time() <= 300
    # Used for another spec, or from another origin: not the page's launch. The launch goes on
    # without a token (the first is within the member's limit, the second is not).
    other = f"/build/gh/org/other/HEAD?build_token={token}"
    assert (await launch(http, router, other))["phase"] == "ready"
    async with http.get(URL(router.url + build_url, encoded=True),
                        headers={"Accept": "text/event-stream", "Origin": "https://elsewhere.example"}) as response:
        final = json.loads((await read_events(response))[-1].data)
    assert final["phase"] == "failed" and final["status_code"] == 429
    assert all(token not in seen["query"] for seen in hub.build_requests)   # ours is never passed on


async def test_failover_fetches_the_token_of_the_next_member(start_devhub, start_router, make_store, http):
    good = await start_devhub("beta", rate_limit=1, rate_limit_period=HOUR)
    down = await start_devhub("alpha")
    members = [member_of(down), member_of(good)]
    await down.stop()            # its launch page and its /build/ refuse connections
    store = make_store()
    router = await start_router(stream_config(members), store, probe=False)
    await mark_healthy(store, "alpha", "beta")
    for _ in range(2):
        final = await launch_from_page(http, router)
        assert final["phase"] == "ready" and final["url"].startswith(good.url)
        # beta accepted the token: it was issued by beta, not by the member tried first.
        assert good.build_requests[-1]["build_token"] == "valid"


async def test_a_member_that_gives_no_token_still_gets_the_launch(limited_router, http):
    router, (hub,) = await limited_router("alpha", issue_build_tokens=False)   # a BinderHub before build tokens
    assert (await launch_from_page(http, router))["phase"] == "ready"
    assert hub.build_requests[-1]["build_token"] is None
    # ... and so it is held to its rate limit, as its own page would be.
    final = await launch_from_page(http, router)
    assert final["phase"] == "failed" and final["status_code"] == 429


# -- the token format -------------------------------------------------------------------------


# The shape of BinderHub's page.html: `window.pageConfig = {{page_config|tojson}};`
BINDERHUB_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Binder</title>
  <script>
    window.pageConfig = {"aboutMessage": "\\u003cp\\u003emybinder.org\\u003c/p\\u003e", "badgeBaseUrl": "https://mybinder.org/", "baseUrl": "/", "bannerHtml": "", "binderVersion": "1.0.0", "buildToken": "%s", "logoUrl": "/static/logo.svg?v=1", "logoWidth": "320px", "repoProviders": []};
  </script>
</head>
<body><div id="root"></div></body>
</html>
"""


def test_token_from_binderhubs_page_and_the_claims_binderhub_checks():
    tokens = BuildTokens(secret=b"s" * 32)
    token = tokens.issue(SPEC, "binder.example", now=time.time())
    assert token_from_page(BINDERHUB_PAGE % token) == token
    assert token_from_page("<html>no token here</html>") is None
    assert tokens.check(token, SPEC, "binder.example") is None
    assert "InvalidAudienceError" in tokens.check(token, "gh/org/other/HEAD", "binder.example")
    assert "origin" in tokens.check(token, SPEC, "elsewhere.example")
    assert BuildTokens(secret=b"s" * 32, check_origin=False).check(token, SPEC, "elsewhere.example") is None
    assert "InvalidSignatureError" in BuildTokens(secret=b"t" * 32).check(token, SPEC, "binder.example")
    expired = tokens.issue(SPEC, "binder.example", now=time.time() - 301)
    assert "ExpiredSignatureError" in tokens.check(expired, SPEC, "binder.example")
    assert "DecodeError" in tokens.check("garbage", SPEC, "binder.example")
    assert token_origin({"Origin": "https://binder.example:8443", "Host": "x"}) == "binder.example:8443"
    assert token_origin({"Host": "binder.example"}) == "binder.example"
