"""The router's JSON API, its own health endpoint and the metrics endpoint."""

from __future__ import annotations

import html
import time

from aiohttp import web

from federation.members import MemberState
from federation.placement.place import place
from federation.spec import SpecError, parse_launch

from . import landing as landing_proxy
from .context import CONTEXT, RouterContext
from .pages import CORS_HEADERS, html_page


def member_json(ctx: RouterContext, view_member, now: float) -> dict:
    """The JSON shape of one member in the API; produced only here."""
    return member_fields(view_member, now, ctx.config.policy.pod_headroom)


def member_fields(view_member, now: float, headroom: int) -> dict:
    """`member_json` without the context, for pure callers (the status page model)."""
    m = view_member.member
    return {
        "name": m.name,
        "url": m.url,
        "weight": view_member.weight,
        "configured_weight": m.weight,
        "prime": m.prime,
        "region": m.region,
        "data_sites": list(m.data_sites),
        "source": m.source,
        "state": view_member.state(now).value,
        "reason": _reason(view_member, now),
        "in_flight": view_member.in_flight,
        "free": view_member.free(headroom),
        "draining": view_member.draining,
        "ejected_until": view_member.ejected_until if view_member.ejected(now) else None,
        "override": view_member.override.to_json() if view_member.override else None,
        "status": view_member.status.to_json(),
    }


def _reason(view_member, now: float) -> str:
    state = view_member.state(now)
    if state == MemberState.DRAINING:
        o = view_member.override
        return f"drained by {o.by or 'an operator'}" + (f": {o.note}" if o.note else "")
    if state == MemberState.EJECTED:
        return f"ejected by passive health for {view_member.ejected_until - now:.0f} s more"
    return view_member.status.reason


async def members(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    view = await ctx.view_for(None)
    return web.json_response(
        {"members": [member_json(ctx, m, view.now) for m in view.members], "strategy": ctx.config.policy.strategy},
        headers=CORS_HEADERS,
    )


async def explain(request: web.Request) -> web.Response:
    """The decision that would be taken now for `?path=`, without counting it as a launch."""
    ctx = request.app[CONTEXT]
    target = request.query.get("path", "")
    path, _, query = target.partition("?")
    try:
        launch = parse_launch(path, query)
    except SpecError as exc:
        return web.json_response({"error": exc.message, "path": target}, status=400)
    view = await ctx.view_for(launch)
    # `cookie`: a sticky cookie's value, honoured as a launch would honour it (only if the router signed it).
    decision = place(view, launch, ctx.config.policy, ctx.rng, sticky=ctx.sticky.member(request.query.get("cookie"),
                                                                                         launch.repo_key))
    body = decision.to_json()
    body["request"] = {"provider": launch.provider, "spec": launch.spec, "repo_key": launch.repo_key,
                       "ref": launch.ref, "data_site": launch.data_site}
    return web.json_response(body, headers=CORS_HEADERS)


async def active_hosts(request: web.Request) -> web.Response:
    """Compatible with the existing redirector: the members currently in rotation."""
    ctx = request.app[CONTEXT]
    view = await ctx.view_for(None)
    hosts = {
        m.name: {"url": m.member.url, "weight": m.weight, "prime": m.member.prime}
        for m in view.members
        if m.state(view.now) == MemberState.HEALTHY and m.weight > 0
    }
    return web.json_response({"active_hosts": hosts}, headers=CORS_HEADERS)


async def router_health(request: web.Request) -> web.Response:
    """The router's own health, for Kubernetes probes: alive while it can answer.

    Members being down is not the router being down, so this stays 200 and says
    how many members take launches.
    """
    ctx = request.app[CONTEXT]
    view = await ctx.view_for(None)
    healthy = sum(1 for m in view.members if m.state(view.now) == MemberState.HEALTHY)
    return web.json_response({
        "ok": True,
        "members": len(view.members),
        "healthy_members": healthy,
        "store": "degraded" if ctx.store.degraded else "ok",
        "prober_leader": bool(ctx.prober and ctx.prober.is_leader),
        "uptime": round(time.time() - ctx.started_at, 1),
    })


async def router_ready(request: web.Request) -> web.Response:
    """Readiness, for load balancers and Kubernetes' readinessProbe: 503 once the router
    is shutting down (router.serve), while it still serves everything else for the
    grace period. Distinct from /health (liveness), which stays 200."""
    ctx = request.app[CONTEXT]
    if ctx.draining_since is not None:
        return web.json_response({"ready": False, "reason": "shutting down"}, status=503)
    return web.json_response({"ready": True})


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    view = await ctx.view_for(None)
    ctx.metrics.export_members(view)  # from the store on every replica: never a stale leader's view
    ctx.metrics.cache_entries.set(await ctx.store.cache_size())
    ctx.metrics.store_degraded.set(1 if ctx.store.degraded else 0)
    ctx.metrics.prober_leader.set(1 if ctx.prober and ctx.prober.is_leader else 0)
    return web.Response(body=ctx.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def landing(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    if ctx.config.router.landing == "proxy":
        return await landing_proxy.handle(request)   # the prime's own front page
    if ctx.config.router.landing == "prime":
        prime = next((m for m in ctx.membership.members() if m.prime), None)
        if prime is not None:
            raise web.HTTPTemporaryRedirect(prime.url + "/" + (f"?{request.query_string}" if request.query_string else ""))
    names = ", ".join(html.escape(m.name) for m in ctx.membership.members()) or "none yet"
    return html_page(
        "Binder federation",
        "<p>This domain launches Binder repositories on the best-placed BinderHub of the federation.</p>"
        "<p>Launch links have the form <code>/v2/gh/&lt;org&gt;/&lt;repo&gt;/&lt;ref&gt;</code>, "
        "for example <a href=\"/v2/gh/binder-examples/requirements/HEAD\"><code>/v2/gh/binder-examples/requirements/HEAD</code></a>.</p>"
        f"<p>Members: {names}. <a href=\"/status\">Federation status</a>, "
        "<a href=\"/api/v1/members\">member status (JSON)</a>.</p>",
    )
