"""Launch handlers: parse the launch path, place it, forward the visitor."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from federation.policy import Decision, place
from federation.spec import LaunchRequest, SpecError, parse_launch

from .context import CONTEXT, RouterContext
from .pages import CORS_HEADERS, refuse

log = logging.getLogger("binderfed.router")

MEMBER_HEADER = "X-Binder-Federation-Member"
REASON_HEADER = "X-Binder-Federation-Reason"


def family_of(path: str) -> str:
    return path.lstrip("/").split("/", 1)[0]


def parse_request(request: web.Request) -> LaunchRequest:
    # raw_path keeps the visitor's escaping exactly, so the member sees what was asked.
    path, _, query = request.raw_path.partition("?")
    return parse_launch(path, query)


async def decide(ctx: RouterContext, launch: LaunchRequest, sticky: str | None) -> Decision:
    started = time.perf_counter()
    view = await ctx.view_for(launch)
    decision = place(view, launch, ctx.config.policy, ctx.rng, sticky=sticky)
    ctx.metrics.decision_seconds.labels(decision.strategy).observe(time.perf_counter() - started)
    return decision


def launch_event(launch: LaunchRequest, decision: Decision) -> dict:
    return {
        "timestamp": time.time(),
        "provider": launch.provider,
        "spec": launch.spec,
        "repo_key": launch.repo_key,
        "ref": launch.ref,
        "family": launch.family,
        "member": decision.member.name if decision.member else None,
        "reason": decision.reason,
        "strategy": decision.strategy,
    }


async def record(ctx: RouterContext, launch: LaunchRequest, decision: Decision) -> None:
    """Count the launch in flight on its member, log it and export it."""
    assert decision.member is not None
    event = launch_event(launch, decision)
    await ctx.store.record_launch(decision.member.name, ctx.config.policy.in_flight_ttl, event)
    ctx.launch_log.write(event)
    ctx.metrics.launches.labels(decision.member.name, decision.reason, launch.family).inc()
    ctx.metrics.redirects.labels(decision.member.name).inc()


def no_member(ctx: RouterContext, launch: LaunchRequest, decision: Decision) -> web.Response:
    retry = ctx.config.router.retry_after
    ctx.metrics.refused.labels("no_member").inc()
    members = len(decision.candidates)
    summary = "; ".join(f"{c.name}: {c.why}" for c in decision.candidates) or "no members are configured"
    log.warning("no member can take launch %s (%s)", launch.provider_spec, summary)
    message = (
        f"No member of this Binder federation can start a server right now ({members} members, none available). "
        f"Please try again in {retry} seconds."
    )
    return refuse(launch.family, 503, "No Binder available right now", message, {"Retry-After": str(retry)})


async def handle_launch(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    try:
        launch = parse_request(request)
    except SpecError as exc:
        ctx.metrics.refused.labels("bad_path").inc()
        log.info("refused malformed launch path %r: %s", request.raw_path[:200], exc.message)
        return refuse(family_of(request.path), 400, "Not a Binder launch link", exc.message)
    cookie = ctx.config.router.sticky_cookie
    decision = await decide(ctx, launch, request.cookies.get(cookie))
    if decision.member is None:
        return no_member(ctx, launch, decision)
    await record(ctx, launch, decision)
    member = decision.member
    # The target is the visitor's own path and query, already checked by parse_launch to
    # start with /v2/, /build/ or /repo/: the result never leaves the member's URL.
    response = web.Response(
        status=307,
        text=f"Redirecting to {member.name}",
        headers={**CORS_HEADERS, "Location": member.url + launch.target,
                 MEMBER_HEADER: member.name, REASON_HEADER: decision.reason},
    )
    max_age = int(ctx.config.router.cookie_max_age_hours * 3600)
    if max_age > 0:
        response.set_cookie(cookie, member.name, max_age=max_age, path=launch.path, httponly=True, samesite="Lax")
    log.info("launch %s -> %s (%s)", launch.provider_spec, member.name, decision.reason,
             extra={"member": member.name, "reason": decision.reason, "repo_key": launch.repo_key})
    return response


async def handle_preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={**CORS_HEADERS, "Access-Control-Allow-Methods": "GET, OPTIONS"})
