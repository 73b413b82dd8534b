"""Launch handlers: parse the launch path, admit it (router.pipeline), forward the visitor."""

from __future__ import annotations

import logging

from aiohttp import web

from federation.config import FederationConfig
from federation.spec import LaunchRequest, SpecError, parse_launch

from . import launch_page, limits, pipeline, relay
from .context import CONTEXT
from .pages import CORS_HEADERS, refuse
from .sticky_cookie import set_sticky_cookie, sticky_member

log = logging.getLogger("binderfed.router")


def family_of(path: str) -> str:
    return path.lstrip("/").split("/", 1)[0]


def parse_request(request: web.Request) -> LaunchRequest:
    # raw_path keeps the visitor's escaping exactly, so the member sees what was asked.
    path, _, query = request.raw_path.partition("?")
    return parse_launch(path, query)


async def handle_launch(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    try:
        launch = parse_request(request)
    except SpecError as exc:
        ctx.metrics.refused.labels("bad_path").inc()
        log.info("refused malformed launch path %r: %s", request.raw_path[:200], exc.message)
        return refuse(family_of(request.path), 400, "Not a Binder launch link", exc.message)
    snapshot = ctx.snapshot  # once: the members and settings of one moment for all of this launch
    config = snapshot.config
    if request.method == "HEAD":
        return head_answer(config, launch)
    if config.router.forward_for(launch.family) == "stream":
        if launch.family == "build":
            return await relay.relay_build(request, ctx, snapshot, launch)  # admitted there, by the same pipeline
        # The router's launch page: its /build/ stream is the launch; the page is only checked against bans.
        refusal = await limits.check_limits(ctx, config, request, launch)
        return refusal or launch_page.serve(request, launch, config)
    admission = await pipeline.admit(ctx, snapshot, request, launch, sticky_member(ctx, config, request, launch))
    if admission.refusal is not None:
        return admission.refusal
    decision = admission.decision
    assert decision is not None and decision.member is not None
    member = decision.member
    # The target is the visitor's own path and query, already checked by parse_launch to
    # start with /v2/, /build/ or /repo/: the result never leaves the member's URL.
    response = web.Response(
        status=307,
        text=f"Redirecting to {member.name}",
        headers={**CORS_HEADERS, "Location": member.url + launch.target,
                 pipeline.MEMBER_HEADER: member.name, pipeline.REASON_HEADER: decision.reason},
    )
    set_sticky_cookie(ctx, config, request, response, member.name, launch)
    # Each routed launch is one line of the launch log (launch_log.sink), made for that;
    # a second line per redirect here would cost the redirect path a tenth of its time.
    if log.isEnabledFor(logging.DEBUG):
        log.debug("launch %s -> %s (%s)", launch.provider_spec, member.name, decision.reason,
                  extra={"member": member.name, "reason": decision.reason, "repo_key": launch.repo_key})
    return response


def head_answer(config: FederationConfig, launch: LaunchRequest) -> web.Response:
    """HEAD of a launch link (link checkers, previews): whether it would launch, without
    placing it, counting it in flight or against any limit."""
    rule = limits.ban_for(config.limits, launch)
    if rule is not None:
        return refuse(launch.family, 403, "Repository not available", rule.message or limits.BANNED_MESSAGE)
    content_type = "text/event-stream" if launch.family == "build" else "text/html"
    return web.Response(status=200, headers={**CORS_HEADERS, "Content-Type": content_type, "Cache-Control": "no-store"})


async def handle_preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={**CORS_HEADERS, "Access-Control-Allow-Methods": "GET, OPTIONS"})
