"""`router.landing: proxy`: the prime member's pages served on the federation's domain.

A dev member is the prime; the router runs on 127.0.0.1 and is asked for paths it does
not own, as a visitor's browser would.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from dataclasses import replace

import aiohttp
import pytest
from yarl import URL

from federation.config import LandingProxySettings
from federation.members import Member
from tests.conftest import fast_config, member_of
from tests.support.waiting import eventually


def proxying(members, **proxy) -> object:
    config = fast_config(list(members))
    return replace(config, router=replace(config.router, landing="proxy",
                                          landing_proxy=replace(LandingProxySettings(), **proxy)))


@pytest.fixture
async def prime(start_devhub):
    return await start_devhub("alpha")


async def fetch(http, url: str, **kwargs):
    async with http.get(URL(url, encoded=True), allow_redirects=False, **kwargs) as response:
        return response.status, response.headers.copy(), await response.read()


async def test_front_page_about_page_and_assets_come_from_the_prime(start_router, prime, http):
    router = await start_router(proxying([member_of(prime, prime=True)]), probe=False)
    status, headers, body = await fetch(http, router.url + "/")
    assert status == 200 and b"<h1>devhub alpha</h1>" in body and b"/static/devhub.css" in body
    assert headers["Content-Type"].startswith("text/html")
    status, _, body = await fetch(http, router.url + "/about")
    assert status == 200 and b"About devhub alpha" in body
    # The stylesheet arrives as the prime compressed it, with its caching headers.
    status, headers, raw = await fetch(http, router.url + "/static/devhub.css", headers={"Accept-Encoding": "gzip"},
                                       auto_decompress=False)
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["ETag"] == '"devhub-css-1"'
    assert gzip.decompress(raw).startswith(b"body { font-family") and len(raw) < len(gzip.decompress(raw))
    assert int(headers["Content-Length"]) == len(raw)
    status, _, body = await fetch(http, router.url + "/versions")
    assert status == 200 and b'"binderhub"' in body
    # HEAD is proxied as HEAD; unknown pages are the prime's 404, not the router's.
    async with http.head(router.url + "/about") as response:
        assert response.status == 200 and await response.read() == b""
    assert (await fetch(http, router.url + "/no/such/page"))[0] == 404


async def test_the_routers_own_paths_are_not_proxied(start_router, prime, http):
    router = await start_router(proxying([member_of(prime, prime=True)]), probe=False)
    status, _, body = await fetch(http, router.url + "/health")
    assert status == 200 and b'"healthy_members"' in body          # the router's health, not the prime's
    assert (await fetch(http, router.url + "/api/v1/nothing-here"))[0] == 404
    assert (await fetch(http, router.url + "/static/launch.js"))[0] == 200


async def test_what_passes_to_the_prime_and_back(start_router, prime, http):
    router = await start_router(proxying([member_of(prime, prime=True)]), probe=False)
    status, headers, body = await fetch(http, router.url + "/_devhub/request?a=1&b=%2F", headers={
        "Cookie": "binder-federation-member=alpha; other=secret", "Authorization": "Bearer secret",
        "Accept-Language": "de", "X-Forwarded-For": "203.0.113.7", "Upgrade": "websocket",
        "If-None-Match": '"v1"', "Referer": "https://binder.example/secret-page",
    })
    assert status == 200
    seen = json.loads(body)
    sent = {name.lower(): value for name, value in seen["headers"]}
    assert seen["method"] == "GET" and seen["path"] == "/_devhub/request" and seen["query"] == "a=1&b=%2F"
    assert "cookie" not in sent and "authorization" not in sent and "upgrade" not in sent
    assert sent["accept-language"] == "de" and sent["if-none-match"] == '"v1"' and "referer" not in sent
    # The peer is not a trusted proxy: its X-Forwarded-For claim is dropped, the peer is the visitor.
    assert sent["x-forwarded-for"] == "127.0.0.1" and sent["x-real-ip"] == "127.0.0.1"
    assert sent["x-forwarded-host"] == URL(router.url).raw_authority and sent["x-forwarded-proto"] == "http"
    assert "Set-Cookie" not in headers                              # the prime plants no cookie on our domain


async def test_redirects_stay_on_the_federation_or_go_to_members_only(start_router, start_devhub, prime, http):
    other = await start_devhub("beta")
    router = await start_router(proxying([member_of(prime, prime=True), member_of(other)]), probe=False)

    async def redirect(to: str):
        return await fetch(http, router.url + "/_devhub/request?redirect=" + str(URL.build(path="", query={"": to}))[2:])

    status, headers, _ = await redirect(prime.url + "/about?x=1")
    assert status == 302 and headers["Location"] == "/about?x=1"     # the prime itself: relative
    status, headers, _ = await redirect("/elsewhere")
    assert status == 302 and headers["Location"] == "/elsewhere"
    status, headers, _ = await redirect(other.url + "/v2/gh/o/r/HEAD")
    assert status == 302 and headers["Location"] == other.url + "/v2/gh/o/r/HEAD"   # a member
    status, headers, body = await redirect("https://evil.example/")
    assert status == 502 and "Location" not in headers and b"outside the federation" in body


async def test_an_unreachable_or_silent_prime_gets_a_clear_page_and_a_log_line(start_router, http, caplog):
    caplog.set_level(logging.WARNING, logger="binderfed.router")
    # Nothing listens on port 9 of loopback: connection refused.
    router = await start_router(proxying([Member(name="gone", url="http://127.0.0.1:9", prime=True)]), probe=False)
    status, headers, body = await fetch(http, router.url + "/")
    assert status == 502 and b"cannot be reached" in body and headers["Content-Type"].startswith("text/html")
    assert any("prime member gone unreachable" in r.getMessage() for r in caplog.records)

    # A prime that accepts the connection and never answers.
    held: list[asyncio.StreamWriter] = []

    async def accept(reader, writer):
        held.append(writer)
    silent = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        router = await start_router(proxying([Member(name="silent", url=f"http://127.0.0.1:{port}", prime=True)],
                                             timeout=0.3), probe=False)
        status, _, body = await fetch(http, router.url + "/about")
        assert status == 504 and b"did not answer in time" in body
        assert any("prime member silent gave no answer to GET /about" in r.getMessage() for r in caplog.records)
    finally:
        for writer in held:
            writer.transport.abort()
        silent.close()
        await silent.wait_closed()


async def test_no_prime_and_other_landing_modes(start_router, prime, http):
    router = await start_router(proxying([member_of(prime)]), probe=False)     # nobody is prime
    status, _, body = await fetch(http, router.url + "/about")
    assert status == 503 and b"no prime member" in body
    config = fast_config([member_of(prime, prime=True)])
    router = await start_router(config, probe=False)                          # landing: page
    assert (await fetch(http, router.url + "/about"))[0] == 404
    status, _, body = await fetch(http, router.url + "/")
    assert status == 200 and b"Binder federation" in body


async def test_a_body_over_the_size_limit_is_refused(start_router, prime, http, caplog):
    caplog.set_level(logging.WARNING, logger="binderfed.router")
    router = await start_router(proxying([member_of(prime, prime=True)], max_body_bytes=1000), probe=False)
    status, _, body = await fetch(http, router.url + "/static/devhub.css")
    assert status == 502 and b"larger than" in body
    assert any("max_body_bytes" in r.getMessage() for r in caplog.records)
    assert (await fetch(http, router.url + "/about"))[0] == 200                 # small pages still pass


async def test_a_prime_that_stalls_mid_body_gets_the_answer_cut_not_ended(start_router, http, caplog):
    caplog.set_level(logging.WARNING, logger="binderfed.router")
    held: list[asyncio.StreamWriter] = []

    async def half_answer(reader, writer):   # headers and a first chunk, then silence
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"6\r\n<html>\r\n")
        await writer.drain()
        held.append(writer)
    server = await asyncio.start_server(half_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        router = await start_router(proxying([Member(name="slow", url=f"http://127.0.0.1:{port}", prime=True)],
                                             read_timeout=0.3), probe=False)
        async with http.get(router.url + "/about") as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):   # incomplete: no browser keeps it as the page
                await response.read()
        await eventually(lambda: any("answer of prime member slow to GET /about cut" in r.getMessage()
                                     for r in caplog.records), timeout=5, what="the log line")
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
        await server.wait_closed()
