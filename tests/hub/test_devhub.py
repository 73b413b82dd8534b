"""The development member, driven through HubClient and plain HTTP over loopback."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import jwt
import pytest

from hub.client import HubClient, MemberHTTPError, MemberResponseError, MemberStalled, MemberUnreachable
from hub.devhub import (
    TOO_MANY_USERS,
    DevHub,
    DevHubFaults,
    DevHubSettings,
    add_arguments,
    describe_spec,
    image_name,
    settings_from_args,
)
from hub.build_tokens import token_from_page
from hub.events import SSEDecoder
from hub.models import PHASES, BuildEvent
from tests.support.waiting import eventually

FAST = dict(build_seconds=0.05, launch_seconds=0.03, event_interval=0.01)
REPO = "gh/binder-examples/octave/HEAD"


@pytest.fixture
async def make_hub() -> AsyncIterator:
    """`hub = await make_hub(**settings)`: a started DevHub with fast timings, stopped at teardown."""
    hubs: list[DevHub] = []

    async def make(faults: DevHubFaults | None = None, **settings) -> DevHub:
        hub = DevHub(DevHubSettings(**{**FAST, **settings}), faults=faults, seed=1)
        await hub.start()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.stop()


async def launch(client: HubClient, hub: DevHub, spec: str = REPO, query: str = "", **kw) -> list[BuildEvent]:
    async with client.build_events(hub.url, spec, query, connect_timeout=5, stall_timeout=kw.pop("stall", 5)) as events:
        return [event async for event in events]


def phases(events: list[BuildEvent]) -> list[str]:
    return [e.phase for e in events]


async def test_full_launch_flow_and_server_page(make_hub, http) -> None:
    hub = await make_hub(name="devA")
    client = HubClient(http)
    events = await launch(client, hub)
    seq = phases(events)
    assert seq[0] == "waiting" and seq[-1] == "ready"
    assert "" in seq  # a progress line without a phase, as BinderHub relays from repo2docker
    known = [p for p in seq if p]
    # phases appear in BinderHub's order (each run of a phase contiguous)
    order = [p for i, p in enumerate(known) if i == 0 or known[i - 1] != p]
    assert order == ["waiting", "fetching", "building", "pushing", "built", "launching", "ready"]
    assert known.count("building") >= 3 and known.count("launching") >= 3
    assert all(p in PHASES for p in known)

    ready = events[-1].data
    for key in ("url", "token", "image", "repo_url", "binder_ref_url"):
        assert ready[key], key
    assert ready["url"].startswith(hub.url + "/user/binder-examples-octave-") and ready["url"].endswith("/")
    assert ready["repo_url"] == "https://github.com/binder-examples/octave"
    assert ready["image"].startswith("devhub/binder-2dexamples-2doctave-03025a:")
    assert ready["binder_request"] == "v2/" + REPO
    built = [e for e in events if e.phase == "built"][0]
    assert built.message == "Built image, launching...\n" and built.data["imageName"] == ready["image"]

    async with http.get(ready["url"] + "lab/tree/x.ipynb", params={"token": ready["token"], "urlpath": "lab"}) as resp:
        assert resp.status == 200
        page = await resp.text()
    name = ready["url"].rstrip("/").rsplit("/", 1)[-1]
    assert f"Jupyter server {name} on devA" in page
    assert "urlpath=lab" in page
    # the Authorization header works too; no token or a wrong one is refused
    async with http.get(ready["url"], headers={"Authorization": f"token {ready['token']}"}) as resp:
        assert resp.status == 200
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(ready["url"]) as resp:
            assert resp.status == 403
        async with anonymous.get(ready["url"], params={"token": "wrong"}) as resp:
            assert resp.status == 403
        async with anonymous.get(hub.url + "/user/nobody/") as resp:
            assert resp.status == 404
    assert hub.user_pods == 1 and hub.build_pods == 0


async def test_second_launch_skips_build(make_hub, http) -> None:
    hub = await make_hub()
    client = HubClient(http)
    first = await launch(client, hub)
    second = await launch(client, hub)
    assert "building" in phases(first)
    assert phases(second)[0] == "built"
    assert second[0].message == "Found built image, launching...\n"
    assert "building" not in phases(second) and "waiting" not in phases(second)
    assert phases(second)[-1] == "ready"
    assert second[-1].data["image"] == first[-1].data["image"]
    assert second[-1].data["url"] != first[-1].data["url"]
    # another ref of the same repository is a different image: built again
    other = await launch(client, hub, "gh/binder-examples/octave/other-branch")
    assert "building" in phases(other)
    assert hub.user_pods == 3


async def test_quota_full_answers_too_many_users(make_hub, http) -> None:
    hub = await make_hub(quota=1)
    client = HubClient(http)
    assert phases(await launch(client, hub))[-1] == "ready"
    report = await client.health(hub.url, timeout=5)
    assert report.ok and report.quota == 1 and report.total_pods == 1 and report.user_pods == 1
    events = await launch(client, hub, "gh/org/other/HEAD")
    assert phases(events) == ["failed"]
    assert events[0].message == TOO_MANY_USERS + "\n"
    assert "Too many users on this BinderHub" in events[0].message


async def test_build_pod_counted_while_building(make_hub, http) -> None:
    hub = await make_hub(build_seconds=0.5, event_interval=0.05)
    client = HubClient(http)
    async with client.build_events(hub.url, REPO, connect_timeout=5, stall_timeout=5) as events:
        async for event in events:
            if event.phase == "building":
                report = await client.health(hub.url, timeout=5)
                assert (report.build_pods, report.user_pods, report.total_pods) == (1, 0, 1)
                break
    await eventually(lambda: hub.build_pods == 0, what="no build pod")


async def test_missing_accept_header_is_an_in_band_400(make_hub, http) -> None:
    hub = await make_hub()
    async with http.get(f"{hub.url}/build/{REPO}") as resp:  # aiohttp sends Accept: */*
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        body = await resp.read()
    items = SSEDecoder().feed(body)
    assert len(items) == 1
    event = BuildEvent.from_data(items[0].data)
    assert event.phase == "failed" and event.data["status_code"] == 400


async def test_fail_repos_fails_after_building(make_hub, http) -> None:
    hub = await make_hub(faults=DevHubFaults(fail_repos=(r"^gh/org/broken/",)))
    client = HubClient(http)
    events = await launch(client, hub, "gh/org/broken/HEAD")
    seq = phases(events)
    assert "building" in seq and seq[-1] == "failed"
    assert "built" not in seq and "launching" not in seq
    assert events[-1].message.startswith("Error during build:")
    assert hub.build_pods == 0 and hub.user_pods == 0
    assert phases(await launch(client, hub, "gh/org/fine/HEAD"))[-1] == "ready"


async def test_unhealthy_fault_and_faults_endpoint(make_hub, http) -> None:
    hub = await make_hub()
    client = HubClient(http)
    async with http.post(hub.url + "/_devhub/faults", json={"unhealthy": True}) as resp:
        assert resp.status == 200
        assert (await resp.json())["unhealthy"] is True
    async with http.get(hub.url + "/health") as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["ok"] is False
    assert [c["service"] for c in body["checks"]] == ["JupyterHub API", "Docker registry", "Pod quota"]
    assert body["checks"][0] == {"service": "JupyterHub API", "ok": False}
    assert body["checks"][2]["_ignore_failure"] is True
    report = await client.health(hub.url, timeout=5)
    assert not report.ok and report.http_status == 503 and report.failed_checks == ("JupyterHub API",)
    async with http.get(hub.url + "/_devhub/faults") as resp:
        assert (await resp.json())["unhealthy"] is True
    async with http.post(hub.url + "/_devhub/faults", json={"no_such_fault": 1}) as resp:
        assert resp.status == 400 and "no_such_fault" in (await resp.json())["error"]
    async with http.post(hub.url + "/_devhub/faults", json={"stall_after": "nonsense"}) as resp:
        assert resp.status == 400
    async with http.post(hub.url + "/_devhub/reset") as resp:
        assert resp.status == 200
    assert (await client.health(hub.url, timeout=5)).ok


async def test_no_pod_quota_check_when_not_on_kubernetes(make_hub, http) -> None:
    hub = await make_hub(report_quota=False, quota=5)
    report = await HubClient(http).health(hub.url, timeout=5)
    assert report.ok and not report.has_quota_check


async def test_versions(make_hub, http) -> None:
    hub = await make_hub(version="9.9.9+test")
    versions = await HubClient(http).versions(hub.url, timeout=5)
    assert versions["binderhub"] == "9.9.9+test"
    assert "build_image" in versions["builder_info"]


async def test_health_faults_garbage_and_delay(make_hub, http) -> None:
    hub = await make_hub()
    client = HubClient(http)
    hub.set_faults(garbage_health=True)
    with pytest.raises(MemberResponseError):
        await client.health(hub.url, timeout=5)
    hub.faults = DevHubFaults(health_delay=30)
    started = time.monotonic()
    with pytest.raises(MemberUnreachable) as info:
        await client.health(hub.url, timeout=0.2)
    assert info.value.cause == "timeout" and time.monotonic() - started < 3


async def test_build_faults_refuse_full_and_stall(make_hub, http) -> None:
    hub = await make_hub()
    client = HubClient(http)
    hub.set_faults(build_refuse=True)
    with pytest.raises(MemberHTTPError) as info:
        await launch(client, hub)
    assert info.value.status == 500
    hub.set_faults(build_refuse=False, build_full=True)
    events = await launch(client, hub)
    assert phases(events) == ["failed"] and events[0].message == TOO_MANY_USERS + "\n"
    hub.set_faults(build_full=False, stall_after="building")
    got: list[str] = []
    started = time.monotonic()
    with pytest.raises(MemberStalled):
        async with client.build_events(hub.url, REPO, connect_timeout=5, stall_timeout=0.3) as events:
            async for event in events:
                got.append(event.phase)
    assert got[-1] == "building" and got.count("building") == 1
    assert time.monotonic() - started < 3
    # the stalled stream's handler notices the client left and frees its build pod
    await eventually(lambda: hub.build_pods == 0, what="no build pod")


async def test_keepalive_comments(make_hub, http) -> None:
    hub = await make_hub(build_seconds=0.4, event_interval=0.2, keepalive_seconds=0.05)
    async with http.get(f"{hub.url}/build/{REPO}", headers={"Accept": "text/event-stream"}) as resp:
        body = await resp.read()
    assert body.count(b":keepalive\n\n") >= 3
    decoder = SSEDecoder()
    items = decoder.feed(body)
    assert decoder.comments >= 3
    assert BuildEvent.from_data([i for i in items if hasattr(i, "data")][-1].data).phase == "ready"


async def test_idle_culling_frees_quota(make_hub, http) -> None:
    hub = await make_hub(quota=1, idle_cull_seconds=0.3)
    client = HubClient(http)
    ready = (await launch(client, hub))[-1]
    assert ready.phase == "ready" and hub.user_pods == 1
    assert phases(await launch(client, hub, "gh/org/other/HEAD")) == ["failed"]
    await eventually(lambda: hub.user_pods == 0, timeout=5, what="no user pod")
    report = await client.health(hub.url, timeout=5)
    assert report.user_pods == 0 and report.total_pods == 0
    async with http.get(ready.data["url"], params={"token": ready.data["token"]}) as resp:
        assert resp.status == 404  # culled
    assert phases(await launch(client, hub, "gh/org/other/HEAD"))[-1] == "ready"


async def test_activity_keeps_a_server_alive(make_hub, http) -> None:
    hub = await make_hub(idle_cull_seconds=0.4)
    client = HubClient(http)
    ready = (await launch(client, hub))[-1].data
    loop = asyncio.get_running_loop()
    until = loop.time() + 1.0
    while loop.time() < until:  # touch it well within the idle limit for 2.5 idle periods
        async with http.get(ready["url"], params={"token": ready["token"]}) as resp:
            assert resp.status == 200
        await asyncio.sleep(0.05)
    assert hub.user_pods == 1
    await eventually(lambda: hub.user_pods == 0, timeout=5, what="no user pod")


async def test_query_and_forwarded_headers_are_recorded(make_hub, http) -> None:
    hub = await make_hub()
    client = HubClient(http)
    async with client.build_events(
        hub.url, REPO, "urlpath=lab", headers={"X-Forwarded-For": "198.51.100.7", "X-Real-Ip": "198.51.100.7"},
        connect_timeout=5, stall_timeout=5,
    ) as events:
        async for _ in events:
            pass
    async with http.get(hub.url + "/_devhub/state") as resp:
        state = await resp.json()
    record = state["build_requests"][-1]
    assert record["provider_spec"] == REPO and record["query"] == "urlpath=lab"
    assert record["x_forwarded_for"] == "198.51.100.7" and record["x_real_ip"] == "198.51.100.7"
    assert state["user_pods"] == 1 and len(state["images"]) == 1


async def test_unknown_provider_and_bad_spec(make_hub, http) -> None:
    hub = await make_hub()
    client = HubClient(http)
    events = await launch(client, hub, "nope/a/b/HEAD")
    assert phases(events) == ["failed"] and "No provider found for prefix nope" in events[0].message
    events = await launch(client, hub, "gh/only-org")
    assert phases(events) == ["failed"] and "Spec is not of the form" in events[0].message


async def test_v2_page_and_index(make_hub, http) -> None:
    hub = await make_hub(name="devB")
    async with http.get(f"{hub.url}/v2/{REPO}?urlpath=lab", headers={"Accept": "text/html"}) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert "EventSource" in page and f"/build/{REPO}" in page
    async with http.get(hub.url + "/") as resp:
        assert "not a BinderHub" in await resp.text()


async def v2_token(http, hub: DevHub, spec: str = REPO, headers: dict | None = None) -> str:
    async with http.get(f"{hub.url}/v2/{spec}", headers={"Accept": "text/html", **(headers or {})}) as resp:
        token = token_from_page(await resp.text())
    assert token is not None
    return token


async def test_v2_page_embeds_a_build_token_as_binderhub_does(make_hub, http) -> None:
    hub = await make_hub(build_token_secret="00" * 32)
    token = await v2_token(http, hub)
    claims = jwt.decode(token, bytes(32), algorithms=["HS256"], audience=REPO)
    host = hub.url.removeprefix("http://")
    assert claims["origin"] == host and 295 <= claims["exp"] - time.time() <= 300
    # The origin is the Origin header's host when the page was asked for cross-origin.
    token = await v2_token(http, hub, headers={"Origin": "https://binder.example"})
    assert jwt.decode(token, bytes(32), algorithms=["HS256"], audience=REPO)["origin"] == "binder.example"


async def test_rate_limit_per_visitor_and_the_build_token_that_skips_it(make_hub, http) -> None:
    hub = await make_hub(rate_limit=1, rate_limit_period=3600)
    client = HubClient(http)
    visitor = {"X-Forwarded-For": "198.51.100.7", "X-Real-Ip": "198.51.100.7"}

    async def build(query: str = "", headers=visitor, spec: str = REPO) -> list[BuildEvent]:
        async with client.build_events(hub.url, spec, query, headers=headers, connect_timeout=5,
                                       stall_timeout=5) as events:
            return [event async for event in events]

    assert phases(await build())[-1] == "ready"
    refused = (await build())[-1]
    assert refused.phase == "failed" and refused.data["status_code"] == 429
    assert refused.message == "Rate limit exceeded. Try again in 3600 seconds.\n"
    # Another visitor (another X-Real-Ip) has a budget of its own.
    assert phases(await build(headers={"X-Real-Ip": "198.51.100.8"}))[-1] == "ready"
    # The page's token skips the limit, as often as the visitor launches.
    token = await v2_token(http, hub)
    for _ in range(2):
        assert phases(await build("build_token=" + token))[-1] == "ready"
    assert hub.build_requests[-1]["build_token"] == "valid"
    # A token for another spec, from another hub or from another origin is refused in band (403).
    other = await make_hub()
    for bad, spec, headers in [(token, "gh/org/other/HEAD", visitor), (await v2_token(http, other), REPO, visitor),
                               (token, REPO, {**visitor, "Origin": "https://elsewhere.example"})]:
        events = await build("build_token=" + bad, headers, spec)
        assert phases(events) == ["failed"] and events[0].data["status_code"] == 403
        assert events[0].message == "Invalid build token\n"
    assert hub.build_requests[-1]["build_token"] == "invalid"


async def test_v2_without_javascript_launches_and_redirects_to_the_server(make_hub, http) -> None:
    # Dev convenience for `curl -L`: clients that do not ask for HTML get the server.
    hub = await make_hub(name="devC")
    async with http.get(f"{hub.url}/v2/{REPO}?urlpath=lab", headers={"Accept": "*/*"},
                        allow_redirects=False) as resp:
        assert resp.status == 302
        location = resp.headers["Location"]
    assert location.startswith(f"{hub.url}/user/") and "/lab?token=" in location
    async with http.get(f"{hub.url}/v2/{REPO}?labpath=a%20b.ipynb", headers={"Accept": "*/*"},
                        allow_redirects=False) as resp:
        assert "/doc/tree/a%20b.ipynb?token=" in resp.headers["Location"]   # as BinderHub's page opens labpath
    hub.set_faults(build_full=True)
    async with http.get(f"{hub.url}/v2/{REPO}", headers={"Accept": "*/*"}, allow_redirects=False) as resp:
        assert resp.status == 503 and "Too many users" in await resp.text()


async def test_stop_cuts_open_streams_and_pending_requests(http) -> None:
    hub = DevHub(DevHubSettings(**FAST), faults=DevHubFaults(stall_after="waiting", health_delay=60))
    await hub.start()
    client = HubClient(http)
    got_waiting = asyncio.Event()

    async def consume() -> None:
        async with client.build_events(hub.url, REPO, connect_timeout=5, stall_timeout=None) as events:
            async for event in events:
                if event.phase == "waiting":
                    got_waiting.set()

    stream_task = asyncio.create_task(consume())
    health_task = asyncio.create_task(client.health(hub.url, timeout=30))
    await asyncio.wait_for(got_waiting.wait(), 5)
    started = time.monotonic()
    await hub.stop()
    assert time.monotonic() - started < 2.5
    results = await asyncio.wait_for(asyncio.gather(stream_task, health_task, return_exceptions=True), 5)
    assert all(isinstance(r, Exception) for r in results), results
    with pytest.raises(RuntimeError):
        hub.url


def test_describe_spec_and_image_names() -> None:
    repo = describe_spec("gh", "binder-examples/octave/1479e0252b2e648bb755ee913292b79495931717")
    assert image_name("", repo.build_slug, repo.resolved_ref) == (
        "binder-2dexamples-2doctave-03025a:1479e0252b2e648bb755ee913292b79495931717"
    )
    assert describe_spec("gh", "a/b/HEAD").resolved_ref == describe_spec("gh", "a/b/HEAD").resolved_ref
    git = describe_spec("git", "https%3A%2F%2Fexample.org%2Frepo.git/main")
    assert git.repo_url == "https://example.org/repo.git"
    assert describe_spec("zenodo", "10.5281/zenodo.3242074").build_slug == "zenodo-3242074"


def test_settings_and_faults_validation() -> None:
    with pytest.raises(ValueError):
        DevHubSettings(quota=-1)
    with pytest.raises(ValueError):
        DevHubSettings(event_interval=0)
    with pytest.raises(ValueError, match="hexadecimal"):
        DevHubSettings(build_token_secret="not hex")
    with pytest.raises(ValueError, match="rate_limit"):
        DevHubSettings(rate_limit=-1)
    with pytest.raises(ValueError, match="invalid regular expression"):
        DevHubFaults(fail_repos=("(",))
    with pytest.raises(ValueError):
        DevHubFaults().updated({"health_delay": -1})
    assert DevHubFaults().updated({"fail_repos": ["a"]}).fail_repos == ("a",)


def test_cli_arguments_map_to_settings() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--port", "0", "--quota", "3", "--name", "m1", "--build-seconds", "0.5", "--no-pod-quota", "--fail-repo", "x"]
    )
    settings = settings_from_args(args)
    assert settings.quota == 3 and settings.name == "m1" and settings.build_seconds == 0.5
    assert settings.rate_limit == 0
    limited = settings_from_args(parser.parse_args(["--rate-limit", "1", "--rate-limit-period", "60",
                                                    "--build-token-secret", "ab" * 32]))
    assert (limited.rate_limit, limited.rate_limit_period, limited.build_token_secret) == (1, 60, "ab" * 32)
    assert settings.report_quota is False and args.fail_repo == ["x"] and args.port == 0


async def test_cli_runs_until_sigterm(http) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.devhub", "--port", "0", "--name", "cli", "--quota", "2",
        cwd=root, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert "listening on http://127.0.0.1:" in line, line
        url = line.strip().rsplit(" ", 1)[-1]
        report = await HubClient(http).health(url, timeout=5)
        assert report.ok and report.quota == 2
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    rest = (await proc.stdout.read()).decode()
    assert "stopped" in rest
