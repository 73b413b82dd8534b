"""The router's own launch page in stream mode: served safely, and driven in headless Chromium."""

from __future__ import annotations

import json
import re

import pytest
from yarl import URL

from tests.conftest import member_of
from tests.support.browser import browser  # noqa: F401  (fixture)
from tests.support.streams import mark_healthy, stream_config
from tests.support.tcp_proxy import TcpProxy

SPEC = "gh/binder-examples/requirements/HEAD"


def embedded_config(page: str) -> dict:
    """The page's launch config, with the build token of its /build/ URL (tests/router/test_build_token.py)
    checked to be there and left out."""
    match = re.search(r'<script id="launch-config" type="application/json">(.*?)</script>', page, re.S)
    assert match, page
    config = json.loads(match.group(1))
    url, token = re.fullmatch(r"(.*?)[?&]build_token=([A-Za-z0-9_.\-]+)", config["build_url"]).groups()
    assert token.count(".") == 2   # a JWT
    return {**config, "build_url": url}


@pytest.fixture
async def stream_router(start_devhub, start_router, make_store):
    """Two dev members behind a router in stream mode, without probes (statuses written as healthy)."""
    async def make(**devhub_settings):
        hubs = [await start_devhub(name, **devhub_settings) for name in ("alpha", "beta")]
        store = make_store()
        router = await start_router(stream_config([member_of(h) for h in hubs]), store, probe=False)
        await mark_healthy(store, "alpha", "beta")
        return router, hubs
    return make


async def first_choice(http, router, hubs):
    """The member placement ranks first for SPEC, and the other one."""
    async with http.get(router.url + "/api/v1/place", params={"path": "/build/" + SPEC}) as response:
        name = (await response.json())["member"]
    first = next(h for h in hubs if h.settings.name == name)
    return first, next(h for h in hubs if h is not first)


async def test_v2_serves_the_launch_page_with_the_launch_embedded(stream_router, http):
    router, hubs = await stream_router()
    async with http.get(URL(router.url + f"/v2/{SPEC}?labpath=index.ipynb", encoded=True)) as response:
        assert response.status == 200 and response.content_type == "text/html"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    assert embedded_config(page) == {"provider_spec": SPEC, "build_url": f"/build/{SPEC}?labpath=index.ipynb"}
    assert '<script src="/static/launch.js" defer></script>' in page
    assert all(not h.build_requests for h in hubs)  # the page itself launches nothing


async def test_hostile_query_cannot_break_out_of_the_page(stream_router, http):
    router, _ = await stream_router()
    query = "urlpath=</script><script>alert(1)</script>&x=\"'&y=<!--"
    async with http.get(URL(router.url + f"/v2/{SPEC}?{query}", encoded=True)) as response:
        assert response.status == 200
        page = await response.text()
    assert "<script>alert" not in page and "<!--" not in page
    assert embedded_config(page)["build_url"] == f"/build/{SPEC}?{query}"


async def test_legacy_repo_link_gets_the_launch_page_of_its_launch(stream_router, http):
    router, _ = await stream_router()
    async with http.get(router.url + "/repo/binder-examples/requirements?urlpath=lab", allow_redirects=False) as r:
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
    assert embedded_config(page)["build_url"] == "/build/gh/binder-examples/requirements/HEAD?urlpath=lab"


async def test_launch_script_is_served_with_a_validator(stream_router, http):
    router, _ = await stream_router()
    async with http.get(router.url + "/static/launch.js") as response:
        assert response.status == 200 and response.content_type == "text/javascript"
        assert "new EventSource(config.build_url)" in await response.text()
        etag = response.headers["ETag"]
    async with http.get(router.url + "/static/launch.js", headers={"If-None-Match": etag}) as response:
        assert response.status == 304


async def test_launch_page_fails_over_and_opens_the_server(stream_router, browser, http):  # noqa: F811
    router, hubs = await stream_router(build_seconds=1.5)
    first, second = await first_choice(http, router, hubs)
    first.set_faults(build_full=True)

    await browser.get(router.url + f"/v2/{SPEC}?labpath=index.ipynb")
    notice = await browser.wait_for_text("#notices", "trying member", timeout=15)
    assert notice == f"Member {first.settings.name} failed (member full); trying member {second.settings.name}"
    await browser.wait_for_text("#log", "Step 1/", timeout=15)  # the build log of the second member
    await browser.screenshot("launch-page-failover")

    await browser.wait_until(lambda d: "/user/" in d.current_url, timeout=20, what="the redirect to the server")
    assert "Jupyter server" in await browser.text("h1")
    url = URL(await browser.current_url())
    assert str(url.origin()) == second.url
    # As BinderHub's page does: labpath -> doc/tree/<path>, and the token as a query parameter.
    assert url.path.endswith("/doc/tree/index.ipynb") and url.query["token"]
    await browser.screenshot("launch-page-server")
    assert len(first.build_requests) == 1 and len(second.build_requests) == 1


async def test_reconnecting_event_source_stays_on_the_member_it_failed_over_to(stream_router, browser, http):  # noqa: F811
    router, hubs = await stream_router(build_seconds=3)
    first, second = await first_choice(http, router, hubs)
    first.set_faults(build_full=True)
    proxy = TcpProxy("127.0.0.1", URL(router.url).port)  # a network between the browser and the router
    await proxy.start()
    try:
        await browser.get(proxy.url + f"/v2/{SPEC}?urlpath=lab")
        await browser.wait_for_text("#notices", "trying member", timeout=15)
        await browser.wait_for_text("#log", "Step 1/", timeout=15)
        assert proxy.cut() >= 1  # the connection drops mid-build; the browser reconnects by itself
        await browser.wait_until(lambda d: "/user/" in d.current_url, timeout=30, what="the redirect to the server")
    finally:
        await proxy.stop()
    assert str(URL(await browser.current_url()).origin()) == second.url
    assert "Jupyter server" in await browser.text("h1")
    # The reconnect (Last-Event-ID naming the second member) went back there, not to the first choice.
    assert len(first.build_requests) == 1 and len(second.build_requests) == 2


# (query string of the launch link, the path the browser must end on under the server's own path)
SERVER_PATHS = [
    # Absolute, scheme-relative and backslash URLs are path segments on the server, never a new origin.
    ("urlpath=https://evil.example/steal", "https://evil.example/steal"),
    ("urlpath=https%3A%2F%2Fevil.example%2Fsteal", "https://evil.example/steal"),
    ("urlpath=//evil.example/x", "evil.example/x"),
    ("urlpath=%2F%2Fevil.example%2Fx", "evil.example/x"),
    ("urlpath=%5C%5Cevil.example/x", "evil.example/x"),
    ("urlpath=/%5Cevil.example/x", "evil.example/x"),
    ("urlpath=javascript:alert(1)", "javascript:alert(1)"),
    # Dot segments that would leave the server's path (another user's server) open its root.
    ("urlpath=..%2F..%2Fother%2F", ""),
    ("urlpath=%2e%2e/%2e%2e/other/", ""),
    ("labpath=../../../other", ""),
    ("labpath=https://evil.example/x", "doc/tree/https://evil.example/x"),
    ("labpath=%2F%2Fevil.example%2Fx", "doc/tree///evil.example/x"),
    ("filepath=%5C%5Cevil.example", "tree/%5C%5Cevil.example"),
    ("filepath=https:%2F%2Fevil.example", "tree/https://evil.example"),
    # What launch links ordinarily carry still works as on BinderHub.
    ("urlpath=lab/tree/a.ipynb", "lab/tree/a.ipynb"),
    ("urlpath=%2Flab%3Freset%3D1", "lab"),
    ("labpath=dir/a%20b.ipynb", "doc/tree/dir/a%20b.ipynb"),
    ("filepath=notebooks/index.ipynb/", "tree/notebooks/index.ipynb"),
]


async def test_urlpath_labpath_filepath_never_leave_the_servers_origin(stream_router, browser):  # noqa: F811
    router, hubs = await stream_router()
    origins = {h.url for h in hubs}
    for query, path in SERVER_PATHS:
        await browser.get(router.url + f"/v2/{SPEC}?{query}")
        await browser.wait_until(lambda d: "/user/" in d.current_url and "token=" in d.current_url, timeout=15,
                                 what=f"the redirect to the server for ?{query}")
        url = URL(await browser.current_url(), encoded=True)
        assert str(url.origin()) in origins, (query, str(url))
        user = "/".join(url.raw_path.split("/")[:3]) + "/"           # /user/<server name>/
        assert url.raw_path == user + path, (query, str(url))
        assert url.query["token"], (query, str(url))
        if query == "urlpath=%2Flab%3Freset%3D1":
            assert url.query["reset"] == "1"                            # the path's own query is kept
