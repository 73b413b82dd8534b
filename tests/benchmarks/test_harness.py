"""The machinery of `make bench`'s redirect and probing figures: the servers it loads,
the load it puts on them and the CPU time it reads. No timing is asserted here
(figures belong to `make bench`); these tests make sure the figures measure what the
tables say they measure."""

from __future__ import annotations

import aiohttp
import pytest

from benchmarks import load, membership, probing, profile
from benchmarks.load import Server, get, run_load
from benchmarks.redirect import router_args
from benchmarks.target import QUOTA
from hub.devhub import DevHub, DevHubSettings
from tests.support.redis_proc import free_port

PATH = "/build/gh/org/repo7/HEAD?urlpath=lab"


@pytest.fixture
def python_load(monkeypatch):
    """The Python load generator, the one every machine has (wrk is installed by make bench only)."""
    monkeypatch.setattr(load, "load_generator", lambda: "python")


def test_router_and_ceiling_both_answer_a_launch_with_a_redirect_to_the_same_path():
    with Server(["ceiling"], None) as ceiling, Server(router_args("memory://", 3), None) as router:
        for server in (ceiling, router):
            status, headers, _ = get(server.port, PATH)
            assert status == 307
            assert headers["Location"].startswith("http://127.0.0.1:") and headers["Location"].endswith(PATH)
        _, headers, _ = get(router.port, PATH)
        # The router decided: members were seen healthy with room, so no panic and no 503.
        assert headers["X-Binder-Federation-Reason"] == "affinity"
        assert "binder-federation-member=" in headers["Set-Cookie"]
        status, _, body = get(router.port, "/api/v1/members")
        assert status == 200 and f'"quota": {QUOTA}' in body.decode()


def test_load_counts_requests_without_errors_and_reads_the_servers_cpu_time(python_load):
    with Server(["ceiling"], None) as ceiling:
        before = ceiling.cpu()
        result = run_load(ceiling.port, 1, 5, 10, None)
        after = ceiling.cpu()
    assert result.tool == "python"
    assert result.requests > 0 and result.errors == {} and result.rps > 0
    assert result.cpu is not None and result.cpu > 0  # the load generator's own CPU time, from wait4
    assert before is not None and after is not None and after > before
    assert 0 < result.p50 <= result.p99


def test_load_errors_are_counted_not_hidden(python_load):
    # A router whose only member cannot be reached refuses /build/ launches in-band
    # (a 200 event stream with a failed event): every answer that is not a 307 counts.
    with Server(["router", "--probe", "--member-url", f"http://127.0.0.1:{free_port()}"], None) as router:
        load.wait_for(lambda: b'"unreachable' in get(router.port, "/api/v1/members")[2], timeout=30,
                      what="the member to be found unreachable", interval=0.1)
        result = run_load(router.port, 1, 2, 10, None)
    assert result.errors.get("not 307", 0) == result.requests > 0


def test_two_processes_share_one_port_and_both_serve_the_load(python_load):
    with Server(["ceiling", "--reuse-port"], None) as one, \
            Server(["ceiling", "--reuse-port", "--port", str(one.port)], None) as two:
        assert one.port == two.port
        before = (one.cpu(), two.cpu())
        run_load(one.port, 1, 50, 10, None)  # 50 connections: the kernel gives each process some
        after = (one.cpu(), two.cpu())
    assert after[0] > before[0] and after[1] > before[1]


def test_probed_members_of_the_health_stand_in_are_healthy_and_counted():
    with Server(["health", "--sites", "3"], None) as members:
        assert len(set(members.ports)) == 3
        urls = [arg for port in members.ports for arg in ("--member-url", f"http://127.0.0.1:{port}")]
        with Server(["router", "--probe", *urls], None) as router:
            load.wait_for(lambda: probing.all_healthy(router.port, 3), timeout=30, what="3 healthy members",
                          interval=0.1)
        assert probing.answered(members.port) >= 3


def test_profile_attributes_a_sample_to_its_innermost_item():
    handler = ["Handle._run (asyncio/events.py:80)", "handle_launch (router/launch.py:150)"]
    assert profile.classify(handler + ["Logger.info (logging/__init__.py:1489)",
                                       "JsonFormatter.format (federation/logs.py:25)",
                                       "encoder_listencode_obj (_json.cpython-311-x86_64-linux-gnu.so)"]) \
        == "log line per launch (logging, JsonFormatter)"
    assert profile.classify(handler + ["place (federation/placement/place.py:80)",
                                       "ufunc_generic_fastcall (numpy/_core/_multiarray_umath.so)"]) \
        == "numpy calls (C, in placement and view)"
    assert profile.classify(handler + ["admit (router/launch.py:70)"]) == profile.HANDLER
    assert profile.classify(["RequestHandler.start (aiohttp/web_protocol.py:500)"]) == profile.AIOHTTP
    assert profile.classify(["_run_once (asyncio/base_events.py:1900)"]) == profile.OTHER


async def test_the_membership_benchmark_sees_a_drain_reach_the_other_replica(redis_url, monkeypatch):
    """`make bench`'s admin-drain figure runs against what replicas really do (a replica
    reads its snapshot of the store): it once asserted that the very next launch on the
    other replica avoided the drained member, which the snapshot no longer promises, and
    failed. One trial, no timing asserted."""
    monkeypatch.setattr(membership, "TRIALS", 1)
    hubs = [DevHub(DevHubSettings(name="alpha")), DevHub(DevHubSettings(name="beta"))]
    for hub in hubs:
        await hub.start()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            samples = await membership.admin_drain(http, hubs, redis_url)
    finally:
        for hub in hubs:
            await hub.stop()
    assert len(samples) == 1 and samples[0] > 0
