"""Hostile input at a public launch domain: malformed HTTP, tricky launch paths, hostile members.

Requests are written byte for byte on a raw socket (an HTTP client library would
normalise or refuse them before they left), and every answer is held to the router's
promises: never a 5xx (other than the documented 503 when no member can serve), never
a redirect outside a configured member URL, always a message in the body. Hostile
members are small servers on 127.0.0.1 that break the member API in one way each;
they are reached through the real prober and the real stream relay.

The property-based tests (hypothesis) run the router in a thread of its own with its
own event loop, so hypothesis can drive it from a plain synchronous test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import re
import socket
import threading
import time
from dataclasses import dataclass, replace
from urllib.parse import unquote, urlsplit

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.config import BanRule, ForwardModes, LimitSettings, RateLimit
from federation.members import Member, MemberState, MemberStatus
from federation.spec import LaunchRequest, SpecError, parse_launch
from federation.stores.memory import MemoryStore
from router.app import MAX_LINE, create_app
from tests.conftest import fast_config, member_of, member_states
from tests.support.servers import serve_on_loopback
from tests.support.streams import LAUNCH, mark_healthy, read_events, sticky, stream_config
from tests.support.waiting import eventually

# One member behind a path prefix (a BinderHub served under /alpha), one at the root.
MEMBERS = (Member(name="alpha", url="http://127.0.0.1:9/alpha"), Member(name="beta", url="http://127.0.0.1:9"))
BANS = (BanRule(re.compile(r"^gh/banned-org/", re.I), "Banned here."),)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def parse_answer(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body)


async def raw_request(port: int, data: bytes, timeout: float = 10.0) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return parse_answer(await asyncio.wait_for(reader.read(), timeout))
    finally:
        writer.close()


def get_line(target: bytes, *headers: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: federation.test\r\n" + b"".join(h + b"\r\n" for h in headers) \
        + b"Connection: close\r\n\r\n"


def check_promises(answer: Answer, target: str, members=MEMBERS) -> None:
    """What the router promises for any request, whatever it was."""
    assert answer.status < 500 or answer.status == 503, (target, answer.status, answer.text[:300])
    assert answer.body.strip(), (target, answer.status, "an answer without a message")
    if 300 <= answer.status < 400:
        location = answer.headers["location"]
        member = next((m for m in members if location.startswith(m.url + "/")), None)
        assert member is not None, (target, location)
        got, base = urlsplit(location), urlsplit(member.url)
        assert (got.scheme, got.netloc) == (base.scheme, base.netloc), (target, location)
        # Even a server that decodes the path and resolves dot segments stays under the member's path.
        resolved = posixpath.normpath(unquote(unquote(got.path)))
        assert resolved.startswith((base.path or "") + "/"), (target, location)
        assert "\r" not in location and "\n" not in location
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        events = [json.loads(line[5:]) for line in answer.text.splitlines() if line.startswith("data:")]
        assert events and all(e.get("message") for e in events if e.get("phase") == "failed"), answer.text


# -- malformed HTTP ---------------------------------------------------------------------------


@pytest.fixture
async def redirect_router(start_router):
    store = MemoryStore()
    config = replace(fast_config(list(MEMBERS)), limits=LimitSettings(enabled=False, banned=BANS))
    router = await start_router(config, store=store, probe=False)
    for m in MEMBERS:
        await store.put_status(MemberStatus(name=m.name, state=MemberState.HEALTHY, reason="ok", checked_at=time.time()))
    return router


MALFORMED = {
    "request line over max_line_size": get_line(b"/v2/gh/org/repo/" + b"x" * (MAX_LINE + 10)),
    "header over max_field_size": get_line(b"/v2/gh/org/repo/HEAD", b"X-Big: " + b"y" * (MAX_LINE + 10)),
    "too many headers": get_line(b"/v2/gh/org/repo/HEAD", *[b"X-H%d: 1" % i for i in range(3000)]),
    "NUL byte in the path": get_line(b"/v2/gh/org/re\x00po/HEAD"),
    "raw UTF-8 in the path": get_line("/v2/gh/org/répo/HEAD".encode()),
    "overlong UTF-8 in the path": get_line(b"/v2/gh/org/\xc0\xae\xc0\xae/HEAD"),
    "space in the path": get_line(b"/v2/gh/org/re po/HEAD"),
    "unknown HTTP version": b"GET /v2/gh/org/repo/HEAD HTTP/9.9\r\nHost: x\r\n\r\n",
    "TLS on the HTTP port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    "negative Content-Length": get_line(b"/v2/gh/org/repo/HEAD", b"Content-Length: -5"),
    "Content-Length and Transfer-Encoding": get_line(b"/v2/gh/org/repo/HEAD", b"Transfer-Encoding: chunked",
                                                      b"Content-Length: 3"),
    "control character in a cookie": get_line(b"/v2/gh/org/repo/HEAD", b"Cookie: binder-federation-member=\x01"),
}


async def test_malformed_requests_get_a_400_with_a_message_and_one_log_line(redirect_router, http, caplog):
    port = int(redirect_router.url.rsplit(":", 1)[1])
    caplog.set_level(logging.INFO)
    for what, data in MALFORMED.items():
        answer = await raw_request(port, data)
        assert answer.status == 400, (what, answer.status, answer.text[:200])
        assert answer.body.strip(), what
    # Each is one INFO line naming the cause, not an ERROR with a traceback (a log flood).
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    lines = [r.getMessage() for r in caplog.records if "refused malformed HTTP request" in r.getMessage()]
    # (TLS on the HTTP port, scanners' daily bread, is logged by aiohttp itself at debug level only.)
    counted = len(MALFORMED) - 1
    assert len(lines) == counted and all("\n" not in line for line in lines)
    assert any("8190 bytes" in line for line in lines) and any("Too many headers" in line for line in lines)
    # The router keeps serving, and counted them.
    async with http.get(redirect_router.url + "/health") as response:
        assert response.status == 200
    async with http.get(redirect_router.url + "/metrics") as response:
        assert f'federation_refused_launches_total{{cause="bad_request"}} {float(counted)}' in await response.text()
    answer = await raw_request(port, get_line(b"/v2/gh/org/repo/HEAD"))
    assert answer.status == 307


TRICKY_PATHS = [
    "/v2/gh/org/../../evil/HEAD", "/v2/gh/%2e%2e/%2e%2e/HEAD", "/v2/gh/org/repo/%2e%2e%2f%2e%2e%2fevil",
    "/v2/gh/org/repo/%252e%252e%252fevil", "/v2/gh/org/repo/HEAD%00", "/v2/gh/org/repo/%c0%ae%c0%ae",
    "/v2/gh/org/repo/%e0%80%ae", "/v2/gh/org/repo/%ff", "/v2/gh/org/repo/%", "/v2/gh/org/repo/%zz",
    "/v2/git/%2F%2Fevil.example%2Frepo/HEAD", "/v2/git/http%3A%2F%2Fevil.example%2Frepo/HEAD",
    "/v2/git/javascript%3Aalert(1)/HEAD", "/v2/git/https%3A%2F%2Fuser%3Apw%40evil.example%2Fr/HEAD",
    "/v2/gh/org/repo/HEAD?urlpath=%0d%0aSet-Cookie:x", "/v2/gh/org/repo/HEAD?next=//evil.example",
    "/v2//evil.example/x/HEAD", "//evil.example/v2/gh/org/repo/HEAD", "/v2/http://evil.example/HEAD",
    "/v2/gh/org/repo/HEAD/../../../..", "/v2/gh/org/repo/%5c%5cevil.example", "/v2/gh/org/repo/a\\b",
    "/v2/gh/org/repo/" + "%41" * 1500, "/build/gh/banned-org/x/HEAD", "/repo/banned-org/x",
    "/v2/zenodo/10.5281/%2e%2e", "/v2/ckan/https%3A%2F%2Fckan.example%2F%2e%2e%2Fdataset/",
    "/v2/gh/org/repo/HEAD#fragment", "/v2/gh/org/repo/HEAD?a=b#c",
]


async def test_tricky_launch_paths_never_leave_the_member_urls(redirect_router):
    port = int(redirect_router.url.rsplit(":", 1)[1])
    statuses = {}
    for target in TRICKY_PATHS:
        answer = await raw_request(port, get_line(target.encode()))
        check_promises(answer, target)
        statuses[target] = answer.status
    assert statuses["/v2/gh/org/../../evil/HEAD"] == 400
    assert statuses["/v2/git/http%3A%2F%2Fevil.example%2Frepo/HEAD"] == 307   # a repository URL, not a target
    assert statuses["/build/gh/banned-org/x/HEAD"] == 200 and statuses["/repo/banned-org/x"] == 403


# -- property-based: the path parser ---------------------------------------------------------------


SEGMENT = st.one_of(
    st.sampled_from(["gh", "gist", "gl", "git", "zenodo", "figshare", "hydroshare", "dataverse", "ckan", "v2", "build",
                     "repo", "..", ".", "%2e%2e", "%2E", "%252e%252e", "%00", "%0a", "%c0%ae", "%e0%80%ae", "%ff", "%",
                     "%zz", "HEAD", "main", "org", "repo.git", "http:", "https%3A%2F%2Fevil.example", "%2F%2Fevil.example",
                     "\\", "evil.example", "10.5281", "zenodo.3242074", "@", ":", "%3A", "%40", "~", "%E2%80%AE",
                     "%2F", "%252F", "b8f6eae9d89241cf8b5904033460af61", "https%3A%2F%2Fgithub.com%2Fo%2Fr",
                     "gitlab-org%2Fgitlab-foss", "javascript%3A", "%5c", "*", "[", "a?b", "#"]),
    st.text(max_size=10),
    st.text(alphabet="abcXYZ019-._~%:@!$&'()*+,;=", max_size=10),
)
PATH = st.builds(lambda family, segments, tail: "/" + "/".join([family, *segments]) + tail,
                 st.sampled_from(["v2", "build", "repo", "v3", "", "V2", "%76%32"]),
                 st.lists(SEGMENT, max_size=7), st.sampled_from(["", "/", "//", "/."]))
QUERY = st.one_of(st.just(""), st.sampled_from(["urlpath=lab", "labpath=a%20b.ipynb", "x=%0d%0a", "a=b#c", "q=é"]),
                  st.text(max_size=20))


def _decoded_dot_segments(path: str) -> bool:
    parts = path.split("/")
    for _ in range(2):  # a server that decodes once, or twice
        path = unquote(path)
        parts += path.split("/")
    return any(p in (".", "..") for p in parts)


@settings(max_examples=300, deadline=None)
@given(path=st.one_of(PATH, st.text(max_size=60)), query=QUERY)
def test_parse_launch_accepts_only_paths_that_stay_where_they_are(path, query):
    try:
        launch = parse_launch(path, query)
    except SpecError as exc:
        assert exc.message and "\n" not in exc.message   # a message fit for a visitor
        return
    assert isinstance(launch, LaunchRequest)
    assert launch.family in ("v2", "build", "repo") and launch.path == path and launch.query == query
    assert path.startswith(f"/{launch.family}/")
    # Nothing in an accepted path can take a forwarded URL elsewhere once a server decodes it.
    assert not _decoded_dot_segments(path), path
    assert "//" not in path and "\\" not in unquote(path)
    assert all(ord(c) > 0x20 and c not in "\x7f#" for c in launch.target), launch.target
    for member in MEMBERS:
        location = urlsplit(member.url + launch.target)
        assert (location.scheme, location.netloc) == ("http", "127.0.0.1:9")


# -- property-based: the live router -------------------------------------------------------------


class ThreadedRouter:
    """A router (redirect mode, and stream mode for /v2/ pages) on its own loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hostile-router", daemon=True)
        self.runners: list[web.AppRunner] = []
        self.ports: dict[str, int] = {}

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _start(self) -> None:
        limits = LimitSettings(enabled=True, per_client=RateLimit(0), per_repo=RateLimit(0), repo_concurrency=0,
                               banned=BANS)
        base = replace(fast_config(list(MEMBERS)), limits=limits)
        # Stream mode serves /v2/ and /repo/ itself; /build/ is redirected (the members are not reachable).
        stream = replace(base, router=replace(base.router, forward=ForwardModes(v2="stream", repo="stream")))
        for name, config in (("redirect", base), ("stream", stream)):
            store = MemoryStore()
            app = create_app(config, store, probe=False)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            for m in MEMBERS:
                await store.put_status(MemberStatus(name=m.name, state=MemberState.HEALTHY, reason="ok",
                                                    checked_at=time.time()))
            self.runners.append(runner)
            self.ports[name] = runner.addresses[0][1]

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner in self.runners:
                await runner.cleanup()
        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def blocking_request(port: int, data: bytes) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return parse_answer(b"".join(chunks))


@pytest.fixture(scope="module")
def threaded_router():
    router = ThreadedRouter()
    router.start()
    yield router
    router.stop()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATH, query=QUERY, mode=st.sampled_from(["redirect", "stream"]),
       cookie=st.sampled_from(["", "alpha", "nobody", "../x", "beta%0d%0a"]))
def test_the_live_router_keeps_its_promises_for_any_launch_path(threaded_router, path, query, mode, cookie):
    # CR and LF would end the request line early; everything else goes out as it is.
    target = (path + ("?" + query if query else "")).replace("\r", "").replace("\n", "")
    headers = [b"Cookie: binder-federation-member=" + cookie.encode()] if cookie else []
    answer = blocking_request(threaded_router.ports[mode], get_line(target.encode("utf-8", "surrogatepass"), *headers))
    check_promises(answer, target)
    if answer.status == 307:
        # Only a launch path the parser accepts is ever forwarded, and exactly as it came.
        launch = parse_launch(*target.split("?", 1)) if "?" in target else parse_launch(target)
        assert answer.headers["location"].endswith(launch.target)


# -- hostile members -----------------------------------------------------------------------------


class HostileMember:
    """A member that breaks the member API in one way (`mode`), on 127.0.0.1."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> "HostileMember":
        app = web.Application()
        app.router.add_get("/health", self.answer)
        app.router.add_get("/versions", self.answer)
        app.router.add_get("/build/{tail:.*}", self.answer)
        self.runner, self.url = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.shutdown()
            await self.runner.cleanup()

    async def answer(self, request: web.Request) -> web.StreamResponse:
        stream = request.path.startswith("/build/")
        if self.mode == "not_json":
            return web.Response(text="<html><body>Welcome to nginx!</body></html>", content_type="text/html")
        if self.mode == "redirect_loop":
            raise web.HTTPFound(request.path)
        if self.mode == "giant":
            if stream:
                response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await response.prepare(request)
                await response.write(b'data: {"phase": "building", "message": "' + b"x" * (2 << 20) + b'"}\n\n')
                return response
            return web.Response(body=b'{"ok": true, "checks": [], "pad": "' + b"x" * (4 << 20) + b'"}',
                                content_type="application/json")
        if self.mode.startswith("ready_") and stream:
            # A complete, well-formed stream whose ready event sends the visitor somewhere else.
            url = {"ready_elsewhere": "https://evil.example/user/x/", "ready_javascript": "javascript:alert(1)//",
                   "ready_credentials": f"http://user:pw@{request.host}/user/x/", "ready_no_url": None}[self.mode]
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            ready = {"phase": "ready", "message": "server running\n", "token": "SECRET-TOKEN", "url": url}
            await response.write(b'data: {"phase": "launching", "message": "starting\\n"}\n\n'
                                 + b"data: " + json.dumps(ready).encode() + b"\n\n")
            return response
        if self.mode.startswith("ready_"):
            return web.json_response({"ok": True, "checks": []})
        if self.mode == "endless":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream" if stream else "application/json"})
            await response.prepare(request)
            await response.write(b"data: " if stream else b"[")
            while True:  # never a newline, never an end
                await response.write(b"1," * 4096)
                await asyncio.sleep(0.001)
        raise AssertionError(self.mode)


HOSTILE_MODES = ["not_json", "giant", "endless", "redirect_loop"]
READY_MODES = ["ready_elsewhere", "ready_javascript", "ready_credentials", "ready_no_url"]


@pytest.fixture
async def hostile():
    members: list[HostileMember] = []

    async def start(mode: str) -> HostileMember:
        members.append(await HostileMember(mode).start())
        return members[-1]

    yield start
    for member in members:
        await member.stop()


async def test_the_prober_marks_hostile_members_unhealthy_and_the_router_keeps_serving(
        hostile, start_devhub, start_router, http):
    good = await start_devhub("good")
    bad = {mode: await hostile(mode) for mode in HOSTILE_MODES}
    members = [member_of(good)] + [Member(name=mode.replace("_", "-"), url=m.url) for mode, m in bad.items()]
    router = await start_router(fast_config(members))
    expected = {"good": "healthy", **{m.name: "unhealthy" for m in members[1:]}}

    async def states():
        current = await member_states(http, router)
        return current == expected and current
    await eventually(states, timeout=10, what=f"member states {expected}")
    async with http.get(router.url + "/api/v1/members") as response:
        reasons = {m["name"]: m["reason"] for m in (await response.json())["members"]}
    assert "not JSON" in reasons["not-json"]
    assert "larger than" in reasons["giant"] and "larger than" in reasons["endless"]
    assert "redirect" in reasons["redirect-loop"] and "not followed" in reasons["redirect-loop"]
    for _ in range(5):
        async with http.get(router.url + "/v2/gh/org/repo/HEAD", allow_redirects=False) as response:
            assert response.status == 307 and response.headers["X-Binder-Federation-Member"] == "good"


@pytest.mark.parametrize("mode", HOSTILE_MODES + READY_MODES)
async def test_the_relay_fails_over_from_a_hostile_member(mode, hostile, start_devhub, start_router, http):
    good = await start_devhub("good")
    bad = await hostile(mode)
    store = MemoryStore()
    router = await start_router(stream_config([Member(name="bad", url=bad.url), member_of(good)], stall_timeout=2),
                                store, probe=False)
    await mark_healthy(store, "bad", "good")
    # Last-Event-ID names the hostile member (signed, as the router's own failover ids are): it is the first choice.
    async with http.get(router.url + LAUNCH, headers={"Last-Event-ID": sticky(router, "bad")}) as response:
        assert response.status == 200
        events = await read_events(response)
    data = [json.loads(e.data) for e in events]
    assert any("Member bad failed" in d.get("message", "") for d in data), data
    assert data[-1]["phase"] == "ready" and data[-1].get("url", "").startswith(good.url), data
    # A ready event pointing off the member's origin never reaches the visitor, nor its token.
    assert "SECRET-TOKEN" not in json.dumps(data) and "evil.example" not in json.dumps(data)
    async with http.get(router.url + "/health") as response:
        assert response.status == 200


# -- unauthenticated cost ---------------------------------------------------------------------------


async def test_visitor_chosen_keys_fill_no_cache_of_the_process(redirect_router, http):
    # Thousands of distinct, long repository keys through the public explain API: what the
    # router keeps must not grow with them (it once kept every key in a process-wide lru_cache).
    import gc
    import tracemalloc

    def path(i: int) -> str:
        url = f"https://git{i}.example.org/" + "x" * 1500 + f"/{i}"   # launch paths are at most 2048 characters
        return "/v2/git/" + url.replace(":", "%3A").replace("/", "%2F") + "/HEAD"

    async def explain(i: int) -> None:
        async with http.get(redirect_router.url + "/api/v1/place", params={"path": path(i)}) as response:
            assert response.status == 200

    for i in range(50):   # warm up: connections, caches of the HTTP machinery
        await explain(i)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50, 2050):
            await explain(i)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 2000 keys of 1.5 KB would be 3 MB kept; a bounded router keeps none of them.
    assert grown < 1_000_000, grown
