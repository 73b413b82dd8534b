"""The app factory: builds one router from a config and a store."""

from __future__ import annotations

import random
from typing import AsyncIterator

import aiohttp
from aiohttp import web

from federation.config import FederationConfig
from federation.launchlog import LaunchLog
from federation.membership import Membership
from federation.store import Store
from health.prober import Prober
from hub.client import HubClient

from . import api, launch
from .context import CONTEXT, RouterContext
from .metrics import Metrics

# Launch paths longer than this are refused before parsing (see federation.spec too).
MAX_LINE = 8190


def create_app(
    config: FederationConfig,
    store: Store,
    membership: Membership | None = None,
    *,
    rng: random.Random | None = None,
    probe: bool = True,
) -> web.Application:
    """Build a router app. `probe=False` leaves member status to whoever fills the store."""
    ctx = RouterContext(
        config=config,
        store=store,
        membership=membership or Membership(config.members),
        metrics=Metrics(),
        launch_log=LaunchLog(config.launch_log),
        rng=rng or random.Random(),
    )
    app = web.Application(handler_args={"max_line_size": MAX_LINE, "max_field_size": MAX_LINE})
    app[CONTEXT] = ctx
    for prefix in ("/v2/", "/build/", "/repo/"):
        app.router.add_get(prefix + "{tail:.*}", launch.handle_launch)
        app.router.add_route("OPTIONS", prefix + "{tail:.*}", launch.handle_preflight)
    app.router.add_get("/", api.landing)
    app.router.add_get("/health", api.router_health)
    app.router.add_get("/active_hosts", api.active_hosts)
    app.router.add_get("/api/v1/members", api.members)
    app.router.add_get("/api/v1/place", api.explain)
    app.router.add_get("/metrics", api.metrics)
    app.cleanup_ctx.append(_lifecycle(probe))
    return app


def _lifecycle(probe: bool):
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        ctx = app[CONTEXT]
        await ctx.store.start()
        # One client session per process, with a timeout on every call made through it.
        ctx.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=60),
            connector=aiohttp.TCPConnector(limit=200, limit_per_host=50),
            auto_decompress=True,
        )
        ctx.client = HubClient(ctx.session)
        if probe:
            ctx.prober = Prober(
                ctx.store, ctx.client, ctx.membership, ctx.config.health,
                headroom=ctx.config.policy.pod_headroom, observer=ctx.metrics.observe_probe,
            )
            await ctx.prober.start()
        try:
            yield
        finally:
            if ctx.prober is not None:
                await ctx.prober.stop()
            await ctx.session.close()
            await ctx.store.close()
            ctx.launch_log.close()

    return lifecycle
