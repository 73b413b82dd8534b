"""HubClient against tiny aiohttp servers on 127.0.0.1 that follow (or break) the member API."""

from __future__ import annotations

import asyncio
import random
import re
import time

import aiohttp
import pytest
from aiohttp import web

from hub.client import (
    HubClient,
    MemberError,
    MemberHTTPError,
    MemberResponseError,
    MemberStalled,
    MemberStreamEnded,
    MemberUnreachable,
)
from hub.events import encode_comment, encode_event
from tests.hub.conftest import fixture_path, free_port
from tests.support.waiting import eventually

FIXTURE = "binderhub-build-events.sse"

HEALTH_OK = {
    "ok": True,
    "checks": [
        {"service": "JupyterHub API", "ok": True},
        {"service": "Docker registry", "ok": True},
        {
            "service": "Pod quota",
            "ok": True,
            "total_pods": 7,
            "build_pods": 2,
            "user_pods": 5,
            "quota": 100,
            "_ignore_failure": True,
        },
    ],
}


def answer(make):
    """An async handler returning (or raising, for HTTP exceptions) `make()`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        result = make()
        if isinstance(result, web.HTTPException):
            raise result
        return result

    return handler


def sse_response(**headers: str) -> web.StreamResponse:
    return web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})


# -- /health and /versions ---------------------------------------------------------------


async def test_health_200(serve_app, http) -> None:
    app = web.Application()
    app.router.add_get("/health", answer(lambda: web.json_response(HEALTH_OK)))
    url = await serve_app(app)
    report = await HubClient(http).health(url + "/", timeout=5)
    assert report.ok and report.http_status == 200
    assert report.has_quota_check and report.quota == 100
    assert (report.total_pods, report.build_pods, report.user_pods) == (7, 2, 5)
    assert report.failed_checks == ()


async def test_health_503_with_body_is_a_report(serve_app, http) -> None:
    body = {
        "ok": False,
        "checks": [
            {"service": "JupyterHub API", "ok": False},
            {"service": "Docker registry", "ok": True},
            {"service": "Pod quota", "ok": False, "total_pods": 12, "build_pods": 0, "user_pods": 12,
             "quota": 10, "_ignore_failure": True},
        ],
    }
    app = web.Application()
    app.router.add_get("/health", answer(lambda: web.json_response(body, status=503)))
    url = await serve_app(app)
    report = await HubClient(http).health(url, timeout=5)
    assert not report.ok and report.http_status == 503
    assert report.failed_checks == ("JupyterHub API",)  # the soft Pod quota check is not a failure
    assert report.quota == 10 and report.total_pods == 12


async def test_health_without_pod_quota_check(serve_app, http) -> None:
    body = {"ok": True, "checks": [{"service": "JupyterHub API", "ok": True}, {"service": "Docker registry", "ok": True}]}
    app = web.Application()
    app.router.add_get("/health", answer(lambda: web.json_response(body)))
    url = await serve_app(app)
    report = await HubClient(http).health(url, timeout=5)
    assert report.ok and not report.has_quota_check and report.quota is None


async def test_health_non_json(serve_app, http) -> None:
    app = web.Application()
    app.router.add_get("/health", answer(lambda: web.Response(text="<html>hello</html>", content_type="text/html")))
    url = await serve_app(app)
    with pytest.raises(MemberResponseError, match="not JSON") as info:
        await HubClient(http).health(url, timeout=5)
    assert info.value.url == url + "/health"
    # The member's words are kept for the log, never in the message (a public reason).
    assert "hello" in info.value.detail and "hello" not in str(info.value)


async def test_health_503_without_json_is_http_error(serve_app, http) -> None:
    app = web.Application()
    app.router.add_get("/health", answer(lambda: web.Response(status=503, text="Service Unavailable")))
    url = await serve_app(app)
    with pytest.raises(MemberHTTPError) as info:
        await HubClient(http).health(url, timeout=5)
    assert info.value.status == 503


async def test_health_wrong_shape(serve_app, http) -> None:
    app = web.Application()
    app.router.add_get("/health", answer(lambda: web.json_response([1, 2, 3])))
    app.router.add_get("/x/health", answer(lambda: web.json_response({"ok": True, "checks": [
        {"service": "Pod quota", "ok": True, "quota": -4}]})))
    url = await serve_app(app)
    client = HubClient(http)
    with pytest.raises(MemberResponseError, match="boolean 'ok'"):
        await client.health(url, timeout=5)
    with pytest.raises(MemberResponseError, match="quota"):
        await client.health(url + "/x", timeout=5)


@pytest.mark.parametrize("chunked", [False, True])
async def test_health_giant_body(serve_app, http, chunked: bool) -> None:
    async def giant(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=b'{"ok": true, "x": "' + b"a" * (2 << 20) + b'"}', content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(64):
                await response.write(b" " * 65536)
        except (ConnectionError, asyncio.CancelledError):
            raise
        return response

    app = web.Application()
    app.router.add_get("/health", giant)
    url = await serve_app(app)
    with pytest.raises(MemberResponseError, match="larger than 1048576 bytes"):
        await HubClient(http).health(url, timeout=5)


async def test_health_other_status_and_redirect(serve_app, http) -> None:
    app = web.Application()
    app.router.add_get("/a/health", answer(lambda: web.Response(status=404)))
    app.router.add_get("/b/health", answer(lambda: web.HTTPFound("http://elsewhere.invalid/health")))
    url = await serve_app(app)
    client = HubClient(http)
    with pytest.raises(MemberHTTPError) as info:
        await client.health(url + "/a", timeout=5)
    assert info.value.status == 404
    with pytest.raises(MemberHTTPError, match="not followed") as info:
        await client.health(url + "/b", timeout=5)
    assert info.value.status == 302


async def test_health_timeout_is_unreachable(serve_app, http) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response(HEALTH_OK)

    app = web.Application()
    app.router.add_get("/health", slow)
    url = await serve_app(app)
    started = time.monotonic()
    with pytest.raises(MemberUnreachable, match="timed out") as info:
        await HubClient(http).health(url, timeout=0.2)
    assert info.value.cause == "timeout"
    assert time.monotonic() - started < 2
    release.set()


async def test_connection_refused_is_unreachable(http) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = HubClient(http)
    with pytest.raises(MemberUnreachable, match="connection refused") as info:
        await client.health(url, timeout=5)
    assert info.value.cause == "refused"
    assert isinstance(info.value, MemberError)
    with pytest.raises(MemberUnreachable):
        await client.versions(url, timeout=5)


async def test_versions(serve_app, http) -> None:
    app = web.Application()
    app.router.add_get("/versions", answer(lambda: web.json_response({"builder_info": {"build_image": "r2d"}, "binderhub": "1.0.0"})))
    app.router.add_get("/bad/versions", answer(lambda: web.json_response(["1.0"])))
    url = await serve_app(app)
    client = HubClient(http)
    assert await client.versions(url, timeout=5) == {"builder_info": {"build_image": "r2d"}, "binderhub": "1.0.0"}
    with pytest.raises(MemberResponseError, match="not a JSON object"):
        await client.versions(url + "/bad", timeout=5)


# -- /build/ event streams ---------------------------------------------------------------


async def test_fixture_stream_in_random_chunks(serve_app, http) -> None:
    data = fixture_path(FIXTURE).read_bytes()
    expected = re.findall(r"^data: (.*)$", data.decode("utf-8"), re.M)
    assert len(expected) == 736
    seen: dict[str, str] = {}

    async def build(request: web.Request) -> web.StreamResponse:
        seen["path"] = request.rel_url.raw_path
        seen["query"] = request.rel_url.raw_query_string
        seen["accept"] = request.headers.get("Accept", "")
        seen["xff"] = request.headers.get("X-Forwarded-For", "")
        response = sse_response()
        await response.prepare(request)
        rng = random.Random(736)
        pos = 0
        while pos < len(data):
            size = rng.randint(1, 200)
            await response.write(data[pos : pos + size])
            pos += size
            if rng.random() < 0.1:
                await asyncio.sleep(0)
        return response

    app = web.Application()
    app.router.add_get("/build/{tail:.*}", build)
    url = await serve_app(app)
    client = HubClient(http)
    stream = client.build_events(
        url, "gh/binder-examples/octave/HEAD", "urlpath=lab%2Ftree%2Fx.ipynb&a=b",
        headers={"X-Forwarded-For": "203.0.113.9"}, connect_timeout=5, stall_timeout=5,
    )
    async with stream as events:
        received = [event async for event in events]
    assert [e.raw for e in received] == expected
    assert len(received) == 736
    assert received[-1].phase == "ready"
    assert received[-1].data["url"].endswith("/user/binder-examples-octave-3ilc7xl2/")
    assert received[0].phase == "waiting"
    assert stream.decoder is not None and stream.decoder.comments == 1
    assert seen == {
        "path": "/build/gh/binder-examples/octave/HEAD",
        "query": "urlpath=lab%2Ftree%2Fx.ipynb&a=b",
        "accept": "text/event-stream",
        "xff": "203.0.113.9",
    }


async def test_escaped_spec_is_sent_unchanged(serve_app, http) -> None:
    seen = {}

    async def build(request: web.Request) -> web.StreamResponse:
        seen["path"] = request.rel_url.raw_path
        response = sse_response()
        await response.prepare(request)
        await response.write(encode_event('{"phase": "failed", "message": "nope"}'))
        return response

    app = web.Application()
    app.router.add_get("/build/{tail:.*}", build)
    url = await serve_app(app)
    spec = "git/https%3A%2F%2Fexample.org%2Frepo.git/main"
    async with HubClient(http).build_events(url, spec, connect_timeout=5, stall_timeout=5) as events:
        assert [e.phase async for e in events] == ["failed"]
    assert seen["path"] == "/build/" + spec


async def test_malformed_json_event(serve_app, http) -> None:
    async def build(request: web.Request) -> web.StreamResponse:
        response = sse_response()
        await response.prepare(request)
        await response.write(encode_event('{"phase": "waiting"}'))
        await response.write(encode_event('{"phase": "building", oops'))
        return response

    app = web.Application()
    app.router.add_get("/build/{tail:.*}", build)
    url = await serve_app(app)
    got = []
    with pytest.raises(MemberResponseError, match="not JSON"):
        async with HubClient(http).build_events(url, "gh/a/b/HEAD", connect_timeout=5, stall_timeout=5) as events:
            async for event in events:
                got.append(event.phase)
    assert got == ["waiting"]


async def test_build_connection_refused(http) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MemberUnreachable, match="connection refused"):
        async with HubClient(http).build_events(url, "gh/a/b/HEAD", connect_timeout=5, stall_timeout=5) as events:
            async for _ in events:
                pass


async def test_build_http_500(serve_app, http) -> None:
    app = web.Application()
    app.router.add_get("/build/{tail:.*}", answer(lambda: web.Response(status=500, text="boom")))
    url = await serve_app(app)
    with pytest.raises(MemberHTTPError) as info:
        async for _ in HubClient(http).build_events(url, "gh/a/b/HEAD", connect_timeout=5, stall_timeout=5):
            pass
    assert info.value.status == 500


async def test_build_redirects_are_not_followed(serve_app, http) -> None:
    hits = []

    async def loop(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPFound(request.path)  # a redirect loop onto itself

    async def other_host(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("http://other.invalid/build/gh/a/b/HEAD")

    app = web.Application()
    app.router.add_get("/build/gh/loop/{tail:.*}", loop)
    app.router.add_get("/build/gh/away/{tail:.*}", other_host)
    url = await serve_app(app)
    client = HubClient(http)
    with pytest.raises(MemberHTTPError, match="not followed") as info:
        async for _ in client.build_events(url, "gh/loop/b/HEAD", connect_timeout=5, stall_timeout=5):
            pass
    assert info.value.status == 302 and len(hits) == 1
    with pytest.raises(MemberHTTPError, match="not followed") as info:
        async for _ in client.build_events(url, "gh/away/b/HEAD", connect_timeout=5, stall_timeout=5):
            pass
    # Where the member wanted to send us is for the log (detail), never the public message.
    assert info.value.status == 307 and "other.invalid" in info.value.detail and "other.invalid" not in str(info.value)


async def test_build_wrong_content_type(serve_app, http) -> None:
    app = web.Application()
    app.router.add_get("/build/{tail:.*}", answer(lambda: web.Response(text="<html>login</html>", content_type="text/html")))
    url = await serve_app(app)
    with pytest.raises(MemberResponseError, match="text/event-stream"):
        async for _ in HubClient(http).build_events(url, "gh/a/b/HEAD", connect_timeout=5, stall_timeout=5):
            pass


async def test_build_stall(serve_app, http) -> None:
    async def build(request: web.Request) -> web.StreamResponse:
        response = sse_response()
        await response.prepare(request)
        await response.write(encode_event('{"phase": "waiting"}'))
        await asyncio.Event().wait()  # silent forever (cancelled when the client leaves)
        return response

    app = web.Application()
    app.router.add_get("/build/{tail:.*}", build)
    url = await serve_app(app)
    got = []
    started = time.monotonic()
    with pytest.raises(MemberStalled, match="silent for more than 0.3s"):
        async with HubClient(http).build_events(url, "gh/a/b/HEAD", connect_timeout=5, stall_timeout=0.3) as events:
            async for event in events:
                got.append(event.phase)
    elapsed = time.monotonic() - started
    assert got == ["waiting"]
    assert 0.25 < elapsed < 3


async def test_keepalives_reset_the_stall_timer(serve_app, http) -> None:
    async def build(request: web.Request) -> web.StreamResponse:
        response = sse_response()
        await response.prepare(request)
        await response.write(encode_event('{"phase": "waiting"}'))
        for _ in range(8):  # 0.8 s of keepalives only, each well within the 0.4 s stall limit
            await asyncio.sleep(0.1)
            await response.write(encode_comment())
        await response.write(encode_event('{"phase": "ready", "url": "http://x/user/y/"}'))
        await asyncio.Event().wait()  # keep the connection open: the client must stop by itself
        return response

    app = web.Application()
    app.router.add_get("/build/{tail:.*}", build)
    url = await serve_app(app)
    async with HubClient(http).build_events(url, "gh/a/b/HEAD", connect_timeout=5, stall_timeout=0.4) as events:
        phases = [e.phase async for e in events]
        assert events.decoder is not None and events.decoder.comments == 8
    assert phases == ["waiting", "ready"]


async def test_stream_ending_early(serve_app, http) -> None:
    async def build(request: web.Request) -> web.StreamResponse:
        response = sse_response()
        await response.prepare(request)
        await response.write(encode_event('{"phase": "building"}'))
        return response

    app = web.Application()
    app.router.add_get("/build/{tail:.*}", build)
    url = await serve_app(app)
    with pytest.raises(MemberStreamEnded, match="before a ready or failed event"):
        async for _ in HubClient(http).build_events(url, "gh/a/b/HEAD", connect_timeout=5, stall_timeout=5):
            pass


async def test_connect_timeout_waiting_for_headers(serve_app, http) -> None:
    async def build(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError

    app = web.Application()
    app.router.add_get("/build/{tail:.*}", build)
    url = await serve_app(app)
    with pytest.raises(MemberUnreachable, match="timed out"):
        async for _ in HubClient(http).build_events(url, "gh/a/b/HEAD", connect_timeout=0.2, stall_timeout=None):
            pass


async def test_oversized_event_line(serve_app, http) -> None:
    async def build(request: web.Request) -> web.StreamResponse:
        response = sse_response()
        await response.prepare(request)
        await response.write(b"data: ")
        for _ in range(100):
            await response.write(b"x" * 4096)  # a line that never ends
        await asyncio.Event().wait()
        return response

    app = web.Application()
    app.router.add_get("/build/{tail:.*}", build)
    url = await serve_app(app)
    client = HubClient(http, max_event_size=64 * 1024)
    with pytest.raises(MemberResponseError, match="longer than 65536 bytes"):
        async for _ in client.build_events(url, "gh/a/b/HEAD", connect_timeout=5, stall_timeout=5):
            pass


class Upstream:
    """A member that streams building events until its client goes away."""

    def __init__(self) -> None:
        self.connected = 0
        self.disconnected = 0

    async def build(self, request: web.Request) -> web.StreamResponse:
        response = sse_response()
        await response.prepare(request)
        self.connected += 1
        try:
            while True:
                await response.write(encode_event('{"phase": "building", "message": "step"}'))
                await asyncio.sleep(0.01)
        except (asyncio.CancelledError, ConnectionError):
            self.disconnected += 1
            raise


@pytest.mark.parametrize("how", ["break", "aclose", "cancel", "gc"])
async def test_consumer_stopping_closes_upstream(serve_app, http, how: str) -> None:
    upstream = Upstream()
    app = web.Application()
    app.router.add_get("/build/{tail:.*}", upstream.build)
    url = await serve_app(app)
    client = HubClient(http)

    if how == "break":
        async with client.build_events(url, "gh/a/b/HEAD", connect_timeout=5, stall_timeout=5) as events:
            async for event in events:
                assert event.phase == "building"
                break
    elif how == "aclose":
        events = client.build_events(url, "gh/a/b/HEAD", connect_timeout=5, stall_timeout=5)
        await events.__anext__()
        await events.aclose()
        await events.aclose()  # idempotent
    elif how == "cancel":
        got_one = asyncio.Event()

        async def consume() -> None:
            async with client.build_events(url, "gh/a/b/HEAD", connect_timeout=5, stall_timeout=5) as events:
                async for _ in events:
                    got_one.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_one.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:  # a consumer that just breaks out of a bare `async for` and drops the iterator

        async def consume() -> None:
            async for _ in client.build_events(url, "gh/a/b/HEAD", connect_timeout=5, stall_timeout=5):
                break

        await consume()

    assert upstream.connected == 1
    await eventually(lambda: upstream.disconnected == 1, timeout=5, what="the upstream to see the client leave")
    # the session is still usable and has no leftover connection to that upstream
    assert not http.closed


async def test_client_uses_the_shared_session(serve_app) -> None:
    app = web.Application()
    app.router.add_get("/health", answer(lambda: web.json_response(HEALTH_OK)))
    url = await serve_app(app)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.001)) as session:
        # the session's own (absurd) default timeout does not apply: each call has its own
        client = HubClient(session, user_agent="binderfed-test")
        assert client.session is session
        assert (await client.health(url, timeout=5)).ok
    assert session.closed


def test_error_messages_are_clear() -> None:
    exc = MemberHTTPError(502, url="http://m")
    assert exc.status == 502 and "502" in str(exc) and exc.url == "http://m"
    stalled = MemberStalled("http://m/build/gh/a/b/HEAD: event stream silent", url="http://m")
    assert isinstance(stalled, MemberError) and stalled.url == "http://m"
    assert issubclass(MemberResponseError, MemberError) and issubclass(MemberStreamEnded, MemberError)
