"""The admin API: authentication, drain/undrain/weight/overrides, shared by replicas, and its CLI."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal

import pytest
from yarl import URL

from federation import config as config_mod
from federation.stores.factory import open_store
from tests.conftest import fast_config, member_of, member_states
from tests.support.cli import run_binderfed
from tests.support.waiting import eventually

TOKEN = "correct-horse-battery-staple"
ADMIN = "/api/v1/admin"
_repos = itertools.count()


def bearer(token: str = TOKEN, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def launches_to(http, router, count: int = 12) -> set[str | None]:
    members = set()
    for _ in range(count):
        http.cookie_jar.clear()
        async with http.get(f"{router.url}/v2/gh/org/repo{next(_repos)}/HEAD", allow_redirects=False) as response:
            members.add(response.headers.get("X-Binder-Federation-Member"))
    return members


async def members_json(http, router) -> dict[str, dict]:
    async with http.get(router.url + "/api/v1/members") as response:
        return {m["name"]: m for m in (await response.json())["members"]}


async def healthy(http, router, *names: str) -> None:
    async def check():
        states = await member_states(http, router)
        return all(states.get(n) == "healthy" for n in names)
    await eventually(check, what=f"{names} healthy")


@pytest.fixture
def admin_token(monkeypatch):
    monkeypatch.setenv("BINDERFED_ADMIN_TOKEN", TOKEN)
    return TOKEN


@pytest.fixture
async def federation(start_devhub, start_router, make_store, http, admin_token):
    alpha, beta = await start_devhub("alpha"), await start_devhub("beta")
    router = await start_router(fast_config([member_of(alpha), member_of(beta)]), store=make_store())
    await healthy(http, router, "alpha", "beta")
    return router


async def test_admin_api_is_disabled_without_a_token(start_devhub, start_router, http, monkeypatch):
    monkeypatch.delenv("BINDERFED_ADMIN_TOKEN", raising=False)
    alpha = await start_devhub("alpha")
    router = await start_router(fast_config([member_of(alpha)]))
    for headers in ({}, bearer()):
        async with http.post(f"{router.url}{ADMIN}/members/alpha/drain", headers=headers) as response:
            assert response.status == 403
            body = await response.json()
    assert "admin API is disabled" in body["error"] and "BINDERFED_ADMIN_TOKEN" in body["error"]
    assert (await member_states(http, router))["alpha"] != "draining"


async def test_missing_token_is_401_and_wrong_token_is_403(federation, http):
    url = f"{federation.url}{ADMIN}/members/alpha/drain"
    async with http.post(url) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.post(url, headers={"Authorization": "Basic YWxhZGRpbjpvcGVu"}) as response:
        assert response.status == 401
    async with http.post(url, headers=bearer("guess")) as response:
        assert response.status == 403
        assert (await response.json())["error"] == "wrong admin token"
    async with http.get(f"{federation.url}{ADMIN}/overrides") as response:
        assert response.status == 401
    assert (await member_states(http, federation))["alpha"] == "healthy"


async def test_drain_with_the_right_token_takes_effect_on_both_replicas(start_devhub, start_router, http,
                                                                         redis_server, admin_token):
    """Two router replicas sharing one RedisStore on a real redis-server."""
    redis_server.flush()
    alpha, beta = await start_devhub("alpha"), await start_devhub("beta")
    config = fast_config([member_of(alpha), member_of(beta)])
    one = await start_router(config, store=open_store(redis_server.url))
    two = await start_router(config, store=open_store(redis_server.url))
    await healthy(http, one, "alpha", "beta")
    await healthy(http, two, "alpha", "beta")

    async with http.post(f"{one.url}{ADMIN}/members/alpha/drain", headers=bearer(**{"X-Admin-User": "alice"}),
                         json={"note": "kernel upgrade"}) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert body["member"]["state"] == "draining"

    for replica in (one, two):
        alpha_json = (await members_json(http, replica))["alpha"]
        assert alpha_json["state"] == "draining"
        assert alpha_json["reason"] == "drained by alice: kernel upgrade"
        assert await launches_to(http, replica) == {"beta"}

    async with http.post(f"{two.url}{ADMIN}/members/alpha/undrain", headers=bearer()) as response:
        assert response.status == 200
    for replica in (one, two):
        assert (await member_states(http, replica))["alpha"] == "healthy"


async def test_draining_member_stays_probed_and_listed(federation, http):
    async with http.post(f"{federation.url}{ADMIN}/members/alpha/drain", headers=bearer()) as response:
        assert response.status == 200
    first = (await members_json(http, federation))["alpha"]
    assert first["state"] == "draining" and first["draining"] is True

    async def probed_again():
        now = (await members_json(http, federation))["alpha"]
        return now["status"]["checked_at"] > first["status"]["checked_at"] and now

    later = await eventually(probed_again, what="a new probe of the draining member")
    assert later["state"] == "draining" and later["status"]["state"] == "healthy"
    assert await launches_to(http, federation) == {"beta"}


async def test_weight_overrides_list_and_clear(federation, http):
    async with http.put(f"{federation.url}{ADMIN}/members/beta/weight", headers=bearer(), json={"weight": 0}) as response:
        assert response.status == 200
        assert (await response.json())["member"]["weight"] == 0
    assert await launches_to(http, federation) == {"alpha"}
    async with http.post(f"{federation.url}{ADMIN}/members/alpha/drain?by=bob", headers=bearer()) as response:
        assert response.status == 200

    async with http.get(f"{federation.url}{ADMIN}/overrides", headers=bearer()) as response:
        listed = (await response.json())["overrides"]
    assert [(o["member"], o["draining"], o["weight"], o["by"]) for o in listed] == [
        ("alpha", True, None, "bob"), ("beta", False, 0.0, "token holder")]

    async with http.put(f"{federation.url}{ADMIN}/members/beta/weight", headers=bearer(), json={"weight": None}) as response:
        assert response.status == 200
    async with http.delete(f"{federation.url}{ADMIN}/members/alpha/override", headers=bearer()) as response:
        assert response.status == 200
    async with http.get(f"{federation.url}{ADMIN}/overrides", headers=bearer()) as response:
        assert (await response.json())["overrides"] == []
    assert await launches_to(http, federation, 20) == {"alpha", "beta"}


@pytest.mark.parametrize("body, problem", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"{}", 'missing "weight"'),
    (b'{"weight": -1}', "weight must be a number from 0 to 1000"),
    (b'{"weight": "2"}', "weight must be a number from 0 to 1000"),
    (b'{"weight": true}', "weight must be a number from 0 to 1000"),
    (b'{"weight": 1, "note": 5}', "note must be a string"),
    # What used to be a 500: an integer too large for a float, NaN/Infinity, nesting deeper than the parser.
    (b'{"weight": 1' + b"0" * 400 + b"}", "weight must be a number from 0 to 1000"),
    (b'{"weight": 1e999}', "weight must be a finite number"),
    (b'{"weight": NaN}', "weight must be a finite number"),
    (b'{"weight": 1000000000}', "weight must be a number from 0 to 1000"),
    (b'{"weight": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "nested too deeply"),
    (b'{"weight": 1, "note": ' + b'{"a":' * 5_000 + b"1" + b"}" * 5_000 + b"}", "nested too deeply"),
])
async def test_bad_bodies_are_400_with_a_message(federation, http, body, problem):
    async with http.put(f"{federation.url}{ADMIN}/members/alpha/weight", headers=bearer(), data=body) as response:
        assert response.status == 400
        assert problem in (await response.json())["error"]


async def test_hostile_requests_get_a_4xx_never_a_500(federation, http):
    port = URL(federation.url).port
    # A bearer token with non-ASCII bytes (latin-1 on the wire): 401, not a 500 from the comparison.
    for token in ("t\u00f6ken-0123456789abcdef", "\u00ff" * 40, "correct-horse-battery-stapl\u00e9"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {ADMIN}/overrides HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     f"Authorization: Bearer {token}\r\n\r\n".encode("latin-1"))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"malformed admin token" in answer
    # A body larger than the admin API reads is refused, saying so.
    async with http.put(f"{federation.url}{ADMIN}/members/alpha/weight", headers=bearer(),
                        data=b'{"weight": 1, "note": "' + b"x" * 100_000 + b'"}') as response:
        assert response.status == 413 and "larger than" in (await response.json())["error"]
    async with http.get(f"{federation.url}/health") as response:
        assert response.status == 200   # still serving


async def test_unknown_member_is_404(federation, http):
    for method, path in (("POST", "/members/nobody/drain"), ("POST", "/members/nobody/undrain"),
                         ("DELETE", "/members/nobody/override")):
        async with http.request(method, f"{federation.url}{ADMIN}{path}", headers=bearer()) as response:
            assert response.status == 404
            assert "unknown member 'nobody'" in (await response.json())["error"]
    async with http.get(f"{federation.url}{ADMIN}/no/such/thing", headers=bearer()) as response:
        assert response.status == 404


async def test_every_change_is_logged_with_who_what_when(federation, http, caplog):
    caplog.set_level(logging.INFO, logger="binderfed.admin")
    # ?by= is free text from the client: a newline must not forge a second log line.
    async with http.post(f"{federation.url}{ADMIN}/members/beta/drain", json={"note": "disk full"},
                         params={"by": "alice\nFAKE LINE"},
                         # not from a trusted proxy: a claimed address is not believed
                         headers=bearer(**{"X-Forwarded-For": "203.0.113.9"})) as response:
        assert response.status == 200
    [record] = [r for r in caplog.records if getattr(r, "admin_action", None) == "drain"]
    assert (record.member, record.by, record.client) == ("beta", "aliceFAKE LINE", "127.0.0.1")
    assert record.at > 0 and "\n" not in record.getMessage()
    assert "drain beta by aliceFAKE LINE from 127.0.0.1" in record.getMessage() and "disk full" in record.getMessage()


async def test_token_file_is_reread_on_reload(start_devhub, start_router, http, tmp_path, monkeypatch):
    monkeypatch.delenv("BINDERFED_ADMIN_TOKEN", raising=False)
    alpha = await start_devhub("alpha")
    token_file = tmp_path / "admin-token"
    token_file.write_text("first-token\n")
    path = tmp_path / "federation.yaml"
    path.write_text(f"members:\n  - name: alpha\n    url: {alpha.url}\nadmin:\n  token_file: {token_file}\n")
    router = await start_router(config_mod.load(path), config_path=path, sighup=True)
    url = f"{router.url}{ADMIN}/overrides"
    async with http.get(url, headers=bearer("first-token")) as response:
        assert response.status == 200

    token_file.write_text("second-token\n")
    os.kill(os.getpid(), signal.SIGHUP)

    async def rotated():
        async with http.get(url, headers=bearer("second-token")) as response:
            return response.status == 200
    await eventually(rotated, timeout=3, what="the rotated token to be accepted")
    async with http.get(url, headers=bearer("first-token")) as response:
        assert response.status == 403


async def test_admin_cli_drains_lists_and_refuses_a_wrong_token(federation, http, tmp_path):
    env = {"BINDERFED_ADMIN_TOKEN": TOKEN}
    done = await run_binderfed("admin", "drain", "alpha", "--note", "maintenance", "--by", "carol",
                               "--federation", federation.url, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("alpha: draining") and "drained by carol: maintenance" in done.stdout
    assert (await member_states(http, federation))["alpha"] == "draining"

    weight = await run_binderfed("admin", "weight", "beta", "2", "--federation", federation.url, env=env)
    assert weight.returncode == 0 and "beta: healthy (weight 2)" in weight.stdout
    listed = await run_binderfed("admin", "overrides", "--federation", federation.url, env=env)
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0] == "alpha: draining by carol - maintenance"

    token_file = tmp_path / "token"
    token_file.write_text("not-it\n")
    wrong = await run_binderfed("admin", "undrain", "alpha", "--federation", federation.url,
                                "--token-file", str(token_file), env={"BINDERFED_ADMIN_TOKEN": ""})
    assert wrong.returncode == 1 and "403" in wrong.stderr and "wrong admin token" in wrong.stderr
    none = await run_binderfed("admin", "undrain", "alpha", "--federation", federation.url,
                               env={"BINDERFED_ADMIN_TOKEN": ""})
    assert none.returncode == 1 and "no admin token" in none.stderr
    undrained = await run_binderfed("admin", "undrain", "alpha", "--federation", federation.url, env=env)
    assert undrained.returncode == 0 and undrained.stdout.startswith("alpha: healthy")
