"""Redirect throughput and latency of one router process, loaded from another process."""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

from federation.config import FederationConfig, LimitSettings, PolicySettings, RouterSettings
from federation.store import Store, open_store
from router.app import create_app

from .common import healthy_statuses, members, table

SIZES = (3, 100, 1000)
DURATION = 5.0
CONCURRENCY = 32


async def commands_processed(store_url: str) -> int | None:
    """Top-level requests the router sent to Redis so far.

    The store's hot path is EVALSHA scripts, and Redis' commandstats also counts the
    commands a script runs inside, so count requests as the calls of the commands
    that only exist at the top level: EVALSHA, EVAL and MULTI."""
    if not store_url.startswith("redis"):
        return None
    import redis.asyncio as redis

    client = redis.from_url(store_url)
    try:
        info = await client.info("commandstats")
        return sum(int(info.get(f"cmdstat_{name}", {}).get("calls", 0))
                   for name in ("evalsha", "eval", "multi"))
    finally:
        await client.aclose()


async def measure(n: int, store_url: str) -> dict:
    ms = members(n)
    # Abuse limits off: one load generator on 127.0.0.1 is one client (benchmarks/soak.py runs with them on).
    cfg = FederationConfig(members=tuple(ms), policy=PolicySettings(in_flight_ttl=2),
                           router=RouterSettings(port=0, cookie_max_age_hours=0), limits=LimitSettings(enabled=False))
    store: Store = open_store(store_url)
    app = create_app(cfg, store, probe=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        for status in healthy_statuses(ms).values():  # as if a prober had just seen every member healthy
            await store.put_status(status)
        before = await commands_processed(store_url)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.loadgen", "--url", f"http://127.0.0.1:{port}",
            "--duration", str(DURATION), "--concurrency", str(CONCURRENCY),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        result = json.loads(out)
        after = await commands_processed(store_url)
        if before is not None and after is not None and result["requests"]:
            result["round_trips"] = (after - before) / result["requests"]
        return result
    finally:
        await runner.cleanup()


def run(redis_url: str | None) -> str:
    rows = []
    stores = [("memory", "memory://")] + ([("redis", redis_url)] if redis_url else [])
    for label, url in stores:
        for n in SIZES:
            r = asyncio.run(measure(n, url))
            rows.append([label, n, r["requests"], f"{r['rps']:.0f}", f"{r['p50'] * 1e3:.2f}", f"{r['p99'] * 1e3:.2f}",
                         sum(r["errors"].values()), f"{r['round_trips']:.2f}" if "round_trips" in r else "-"])
    return table(f"Redirect throughput: one router process, load generator in another "
                 f"({CONCURRENCY} connections, {DURATION:.0f} s)",
                 ["store", "members", "requests", "req/s", "p50 ms", "p99 ms", "errors", "redis round trips/launch"], rows)
