"""How fast membership changes reach routing: config edit, Consul registration, admin drain.

Each figure is the time from the change to the first launch routed accordingly,
measured by launching in a tight loop (one launch every ~5 ms) on loopback with dev
members, default source settings (file polled every 0.5 s) and health probes every
0.2 s.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from federation import config as config_mod
from federation.member_cli import Registration, deregister_member, register_member
from federation.stores.factory import open_store
from hub.devhub import DevHub, DevHubSettings
from router.app import create_app
from tests.support.consul_double import ConsulDouble

from .common import summary, table

TRIALS = 8
HEALTH = "health:\n  period: 0.2\n  failed_period: 0.4\n  jitter: 0\n  timeout: 1\n  retries: 0\n"
TOKEN = "benchmark-admin-token-0123456789"
_repos = itertools.count()


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _member(http: aiohttp.ClientSession, url: str) -> str | None:
    async with http.get(f"{url}/v2/gh/org/repo{next(_repos)}/HEAD", allow_redirects=False) as response:
        return response.headers.get("X-Binder-Federation-Member")


async def _until(http, url: str, want: str | None, avoid: str | None = None, timeout: float = 10.0,
                 in_a_row: int = 1) -> float:
    """Seconds until `in_a_row` launches in a row (each a new repository) go to `want` (or
    anywhere but `avoid`). With two members and `avoid` still admissible, ten in a row
    happen by chance once in 2**10 times."""
    started, run = time.perf_counter(), 0
    while time.perf_counter() - started < timeout:
        member = await _member(http, url)
        if (want is not None and member == want) or (avoid is not None and member != avoid):
            run += 1
            if run >= in_a_row:
                return time.perf_counter() - started
            continue
        run = 0
        await asyncio.sleep(0.005)
    raise RuntimeError(f"no launch routed as expected within {timeout} s")


def _yaml(members: list[tuple[str, str, float]], extra: str = "") -> str:
    body = "members:\n" + "".join(f"  - name: {n}\n    url: {u}\n    weight: {w}\n" for n, u, w in members)
    # The benchmark launches from one address far more often than a visitor may.
    return body + HEALTH + "limits:\n  enabled: false\n" + extra


async def _wait_healthy(http, url: str, name: str) -> None:
    for _ in range(500):
        async with http.get(url + "/api/v1/members") as response:
            states = {m["name"]: m["state"] for m in (await response.json())["members"]}
        if states.get(name) == "healthy":
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"{name} never became healthy")


async def yaml_edit(http, hubs: list[DevHub], tmp: Path) -> list[float]:
    """Edit: alpha to weight 0 and beta added; until the first launch on beta."""
    (alpha, beta) = hubs
    samples = []
    rng = random.Random(6)
    for _ in range(TRIALS):
        path = tmp / "federation.yaml"
        path.write_text(_yaml([("alpha", alpha.url, 1)]))
        app = create_app(config_mod.load(path), open_store("memory://"), config_path=path)
        runner, url = await _serve(app)
        try:
            await _wait_healthy(http, url, "alpha")
            await asyncio.sleep(rng.uniform(0, 0.5))  # edits land anywhere in the 0.5 s poll cycle
            path.write_text(_yaml([("alpha", alpha.url, 0), ("beta", beta.url, 1)]))
            samples.append(await _until(http, url, "beta"))
        finally:
            await runner.cleanup()
    return samples


async def consul_register(http, hubs: list[DevHub], tmp: Path) -> list[float]:
    """`binderfed member register` (Consul HTTP check every 0.1 s); until the first launch on it."""
    (alpha, beta) = hubs
    double = ConsulDouble()
    await double.start()
    samples = []
    try:
        path = tmp / "federation.yaml"
        # The dev members listen on loopback: the allowlist must name the address.
        consul = f"consul:\n  enabled: true\n  url: {double.url}\n  wait: 30\n  allowed_hosts: ['127.0.0.1']\n"
        path.write_text(_yaml([("alpha", alpha.url, 0.001)], consul))
        runner, url = await _serve(create_app(config_mod.load(path), open_store("memory://"), config_path=path))
        try:
            await _wait_healthy(http, url, "alpha")
            for _ in range(TRIALS):
                started = time.perf_counter()
                await register_member(double.url, Registration(name="beta", url=beta.url, check_interval="0.1s"))
                await _until(http, url, "beta")
                samples.append(time.perf_counter() - started)
                await deregister_member(double.url, "beta")
                await _until(http, url, "alpha")
        finally:
            await runner.cleanup()
    finally:
        await double.stop()
    return samples


async def admin_drain(http, hubs: list[DevHub], redis_url: str) -> list[float]:
    """Drain through replica one; until replica two routes around the member (shared Redis)."""
    (alpha, beta) = hubs
    os.environ["BINDERFED_ADMIN_TOKEN"] = TOKEN
    cfg = config_mod.parse({"members": [{"name": "alpha", "url": alpha.url}, {"name": "beta", "url": beta.url}],
                            "health": {"period": 0.2, "jitter": 0, "retries": 0}, "router": {"cookie_max_age_hours": 0},
                            "limits": {"enabled": False}})
    one, url_one = await _serve(create_app(cfg, open_store(redis_url)))
    two, url_two = await _serve(create_app(cfg, open_store(redis_url)))
    samples = []
    try:
        await _wait_healthy(http, url_two, "alpha")
        await _wait_healthy(http, url_two, "beta")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for _ in range(TRIALS):
            started = time.perf_counter()
            async with http.post(f"{url_one}/api/v1/admin/members/alpha/drain", headers=headers) as response:
                assert response.status == 200
            # Replica two's launches read its local snapshot of the store, which has the
            # override within its freshness bound: until then about half its launches go to alpha.
            await _until(http, url_two, None, avoid="alpha", in_a_row=10)
            samples.append(time.perf_counter() - started)
            for _ in range(20):
                assert await _member(http, url_two) == "beta"
            async with http.delete(f"{url_one}/api/v1/admin/members/alpha/override", headers=headers) as response:
                assert response.status == 200
            await _until(http, url_two, "alpha")   # undrained there too before the next trial
    finally:
        await one.cleanup()
        await two.cleanup()
    return samples


async def _run(redis_url: str) -> str:
    hubs = [DevHub(DevHubSettings(name="alpha")), DevHub(DevHubSettings(name="beta"))]
    for hub in hubs:
        await hub.start()
    rows = []
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            with tempfile.TemporaryDirectory() as tmp:
                for label, samples in (
                    ("YAML edit -> first launch on the added member", await yaml_edit(http, hubs, Path(tmp))),
                    ("Consul register -> first launch on it", await consul_register(http, hubs, Path(tmp))),
                    ("admin drain on replica 1 -> replica 2 routes around it (10 launches in a row)", await admin_drain(http, hubs, redis_url)),
                ):
                    s = summary(samples)
                    rows.append([label, len(samples), f"{s['p50'] * 1000:.0f}", f"{max(samples) * 1000:.0f}"])
    finally:
        for hub in hubs:
            await hub.stop()
    return table("Membership changes reaching routing", ["change", "trials", "p50 ms", "max ms"], rows)


def run(redis_url: str) -> str:
    return asyncio.run(_run(redis_url))
