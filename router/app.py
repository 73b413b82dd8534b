"""The app factory: builds one router from a config and a store."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
from aiohttp import web

from federation.config import FederationConfig
from federation.launchlog import LaunchLog
from federation.membership import Membership
from federation.stores.protocol import Store
from health.outlier import OutlierDetector
from health.prober import Prober
from health.report_ingest import RedisReportInbox, ReportIngest
from hub.client import HubClient
from hub.resolver import GuardedResolver

from . import active_streams, admin, api, badges, landing, launch, launch_page, sources, status
from .context import CONTEXT, RouterContext
from .malformed import MalformedRequestLog
from .metrics import Metrics

log = logging.getLogger("binderfed.router")

# Launch paths longer than this are refused before parsing (see federation.spec too).
MAX_LINE = 8190


def handler_args(idle_timeout: float, on_malformed: Callable[[], None]) -> dict[str, Any]:
    """How the router's connections are served (also the benchmark ceiling's, so both are served alike)."""
    return {
        "max_line_size": MAX_LINE, "max_field_size": MAX_LINE,
        # A connection waiting for its next request is closed after this (router.connections).
        "keepalive_timeout": idle_timeout,
        # A malformed request is one log line, not a traceback (router.malformed).
        "logger": MalformedRequestLog(on_malformed),
    }


def create_app(
    config: FederationConfig,
    store: Store,
    membership: Membership | None = None,
    *,
    rng: random.Random | None = None,
    probe: bool = True,
    config_path: str | Path | None = None,
    sighup: bool = False,
) -> web.Application:
    """Build a router app. `probe=False` leaves member status to whoever fills the store.

    `config_path`: the YAML file `config` came from; it is watched and reloaded while
    the app runs (and on SIGHUP when `sighup`, for the one app of a `binderfed serve`).
    """
    if membership is None:
        membership = Membership(config.members, config=config)
    else:
        membership.publish("config", config=config)  # its members stay as the caller set them
    metrics = Metrics()
    ctx = RouterContext(
        store=store,
        membership=membership,
        metrics=metrics,
        launch_log=LaunchLog(config.launch_log),
        outlier=OutlierDetector(store, membership, lambda: membership.snapshot.config.health.outlier,
                                observer=metrics.observe_ejection),
        rng=rng or random.Random(),
    )
    app = web.Application(handler_args=handler_args(config.router.idle_timeout,
                                                    lambda: ctx.metrics.refused.labels("bad_request").inc()))
    app[CONTEXT] = ctx
    for prefix in ("/v2/", "/build/", "/repo/"):
        app.router.add_get(prefix + "{tail:.*}", launch.handle_launch)
        app.router.add_route("OPTIONS", prefix + "{tail:.*}", launch.handle_preflight)
    app.router.add_get("/", api.landing)
    app.router.add_get("/health", api.router_health)
    app.router.add_get("/ready", api.router_ready)
    app.router.add_get("/active_hosts", api.active_hosts)
    app.router.add_get("/api/v1/members", api.members)
    app.router.add_get("/api/v1/place", api.explain)
    app.router.add_get("/metrics", api.metrics)
    status.setup(app)
    badges.setup(app)
    launch_page.setup(app, config)
    admin.setup(app, config.admin)
    app[sources.SOURCES] = sources.RouterSources(app, config_path, sighup=sighup)
    app.cleanup_ctx.append(_lifecycle(probe))
    active_streams.setup(app)  # after the store: relayed streams end before it closes
    app.cleanup_ctx.append(sources.lifecycle)  # after the store and prober: stopped before them
    landing.setup(app)  # the catch-all (landing: proxy), after every other route
    return app


def _report_ingest(ctx: RouterContext) -> ReportIngest | None:
    """The reader of member agent reports, when `reports.enabled` (they arrive through Redis)."""
    settings = ctx.config.reports
    if not settings.enabled:
        return None
    url = settings.redis_url(ctx.config.store_url)
    if url is None:
        log.error("reports.enabled but no Redis to read agent reports from: set reports.url or a redis:// store.url")
        return None
    return ReportIngest(RedisReportInbox(url), ctx.store, ctx.membership, settings,
                        observer=lambda member, result: ctx.metrics.agent_reports.labels(member, result).inc())


def _lifecycle(probe: bool):
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        ctx = app[CONTEXT]
        ctx.store.on_error = ctx.metrics.store_errors.inc  # a store bug is counted, not mistaken for an outage
        await ctx.store.start()
        # One client session per process, with a timeout on every call made through it.
        ctx.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=60),
            # No pool limit: a relayed /build/ stream (forward: stream) holds its member
            # connection for a whole build, so a limit would queue launches behind builds.
            # Names resolve to private addresses only for hosts the operator named (hub.resolver).
            connector=aiohttp.TCPConnector(limit=0, resolver=GuardedResolver(ctx.may_resolve_private)),
            auto_decompress=True,
            # Never keep a member's cookies: they would go out with other visitors' requests.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        ctx.client = HubClient(ctx.session)
        await ctx.outlier.start()
        ctx.reports = _report_ingest(ctx)
        if ctx.reports is not None:
            await ctx.reports.start()
        if probe:
            ctx.prober = Prober(
                ctx.store, ctx.client, ctx.membership, ctx.config.health,
                headroom=ctx.config.policy.pod_headroom, observer=ctx.metrics.observe_probe,
                lease_ttl=ctx.config.health.prober_lease_ttl,
                fill_capacity=ctx.reports.fill_capacity if ctx.reports is not None else None,
            )
            await ctx.prober.start()
        try:
            yield
        finally:
            if ctx.prober is not None:
                await ctx.prober.stop()
            if ctx.reports is not None:
                await ctx.reports.stop()
            await ctx.outlier.stop()
            await ctx.session.close()
            await ctx.store.close()
            ctx.launch_log.close()

    return lifecycle
