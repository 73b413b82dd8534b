"""The sticky cookie: a fixed path, a signed value, Secure behind https, and bounded load wins over it."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from yarl import URL

from federation.members import Member, MemberState, MemberStatus
from federation.stores.factory import open_store
from tests.conftest import fast_config, member_states
from tests.support.streams import COOKIE, sticky, sticky_member
from tests.support.waiting import eventually

MEMBERS = [Member(name="alpha", url="http://127.0.0.1:9/alpha"), Member(name="beta", url="http://127.0.0.1:9/beta")]
TARGET = "/v2/gh/org/sticky/HEAD"


async def _all_healthy(http, router) -> bool:
    return set((await member_states(http, router)).values()) == {"healthy"}


async def healthy(store, pods: dict[str, int] | None = None) -> None:
    for m in MEMBERS:
        await store.put_status(MemberStatus(name=m.name, state=MemberState.HEALTHY, reason="ok", quota=100,
                                            has_quota=True, total_pods=(pods or {}).get(m.name, 0),
                                            checked_at=time.time()))


def config(trusted: tuple[str, ...] = (), **router):
    cfg = fast_config(MEMBERS)
    return replace(cfg, router=replace(cfg.router, trusted_proxies=trusted, **router))


async def raw_get(port: int, target: str, *headers: str) -> tuple[int, list[str]]:
    """(status, every Set-Cookie line) of a GET written byte for byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"GET {target} HTTP/1.1\r\nHost: federation.test\r\n" + "".join(h + "\r\n" for h in headers)
                  + "Connection: close\r\n\r\n").encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return int(head[0].split()[1]), [line.split(":", 1)[1].strip() for line in head[1:]
                                     if line.lower().startswith("set-cookie:")]


async def test_a_semicolon_in_the_launch_path_cannot_add_cookie_attributes(start_router, make_store):
    store = make_store()
    router = await start_router(config(), store, probe=False)
    await healthy(store)
    port = URL(router.url).port
    status, cookies = await raw_get(port, "/v2/gh/org/repo/main;Domain=evil.example;Path=/x;Max-Age=99999999")
    assert status == 307 and len(cookies) == 1
    attributes = [part.strip().lower() for part in cookies[0].split(";")]
    assert "path=/" in attributes and not any(a.startswith(("domain", "path=/x")) for a in attributes)
    assert "max-age=14400" in attributes and "httponly" in attributes and "samesite=lax" in attributes
    value = cookies[0].split(";", 1)[0].split("=", 1)[1]
    assert sticky_member(router, value, "/v2/gh/org/repo/main") in ("alpha", "beta")


async def test_secure_behind_https_from_a_trusted_proxy_only(start_router, make_store):
    store = make_store()
    plain = await start_router(config(), store, probe=False)
    proxied = await start_router(config(trusted=("127.0.0.0/8",)), store, probe=False)
    await healthy(store)

    async def secure(router, *headers: str) -> bool:
        _, cookies = await raw_get(URL(router.url).port, TARGET, *headers)
        return "secure" in [part.strip().lower() for part in cookies[0].split(";")]

    assert not await secure(proxied)
    assert await secure(proxied, "X-Forwarded-Proto: https")
    assert await secure(proxied, "X-Forwarded-Proto: http", "X-Forwarded-Proto: https")   # a proxy's appended line
    assert not await secure(plain, "X-Forwarded-Proto: https")                           # anyone can claim it


async def test_a_valid_cookie_yields_to_bounded_load(start_router, make_store, http):
    store = make_store()
    router = await start_router(config(), store, probe=False)
    await healthy(store, pods={"alpha": 90, "beta": 0})      # alpha far above the federation's average load
    for cookie_member, expected, reason in (("alpha", "beta", None), ("beta", "beta", "cookie")):
        async with http.get(router.url + TARGET, cookies={COOKIE: sticky(router, cookie_member, TARGET)},
                            allow_redirects=False) as response:
            assert response.status == 307
            assert response.headers["X-Binder-Federation-Member"] == expected
            if reason:
                assert response.headers["X-Binder-Federation-Reason"] == reason
            else:
                assert response.headers["X-Binder-Federation-Reason"] != "cookie"
    # What the explain API says for that cookie is what a launch does.
    async with http.get(router.url + "/api/v1/place",
                        params={"path": TARGET, "cookie": sticky(router, "alpha", TARGET)}) as response:
        assert (await response.json())["member"] == "beta"


async def test_replicas_sharing_a_secret_honour_each_others_cookies(start_router, redis_url, http, tmp_path, caplog,
                                                                   monkeypatch):
    monkeypatch.delenv("BINDERFED_COOKIE_SECRET", raising=False)
    secret = tmp_path / "cookie-secret"
    secret.write_text("a-long-random-secret-0123456789abcdef\n")
    shared = config(cookie_secret_file=str(secret))
    caplog.set_level(logging.INFO, logger="binderfed.router")
    one = await start_router(shared, open_store(redis_url), probe=False)
    two = await start_router(shared, open_store(redis_url), probe=False)
    alone = await start_router(replace(shared, router=replace(shared.router, cookie_secret_file="")),
                               open_store(redis_url), probe=False)
    await healthy(one.ctx.store)
    for router in (two, alone):  # the statuses reach the other replicas within their store's refresh
        await eventually(lambda: _all_healthy(http, router), timeout=router.ctx.store.freshness_bound + 2,
                         what="the other replicas to see the statuses")
    async with http.get(one.url + TARGET, allow_redirects=False) as response:
        first = response.headers["X-Binder-Federation-Member"]
        value = response.cookies[COOKIE].value
    other = "beta" if first == "alpha" else "alpha"
    from_one = sticky(one, other, TARGET)
    async with http.get(two.url + TARGET, cookies={COOKIE: from_one}, allow_redirects=False) as response:
        assert response.headers["X-Binder-Federation-Member"] == other       # signed by a replica with the same secret
    async with http.get(alone.url + TARGET, cookies={COOKIE: from_one}, allow_redirects=False) as response:
        assert response.headers["X-Binder-Federation-Member"] == first        # its own random secret: ignored
    assert sticky_member(two, value, TARGET) == first
    assert any(f"signed with the secret from file {secret}" in r.getMessage() for r in caplog.records)
    warning = [r for r in caplog.records if "no sticky-cookie secret configured" in r.getMessage()]
    assert warning and warning[0].levelno == logging.WARNING   # replicas (a Redis store) without a secret: said loudly
