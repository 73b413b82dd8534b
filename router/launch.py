"""Launch handlers: parse the launch path, place it, forward the visitor."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import replace

from aiohttp import hdrs, web

from federation.policy import Decision, place
from federation.spec import LaunchRequest, SpecError, parse_launch
from federation.store import REPO_CAP, RecordResult
from federation.view import FederationView

from . import launch_page, limits, relay
from .clients import is_https
from .context import CONTEXT, RouterContext
from .pages import CORS_HEADERS, refuse

log = logging.getLogger("binderfed.router")

MEMBER_HEADER = "X-Binder-Federation-Member"
REASON_HEADER = "X-Binder-Federation-Reason"

# Placements read in-flight counts from a snapshot; replicas (and concurrent requests of
# one replica) read the same counts before any of them records. So a launch is counted
# against its member's room in one atomic store call, and placed again from a fresh
# snapshot when the room went to a concurrent launch. A refusal means the member was full
# at that moment, so the next snapshot passes it over: a few attempts are enough.
ADMIT_ATTEMPTS = 4


def sticky_member(ctx: RouterContext, request: web.Request, launch: LaunchRequest) -> str | None:
    """The member the visitor's sticky cookie names for this repository, if the router signed it."""
    if hdrs.COOKIE not in request.headers:  # most launches: no cookie to parse
        return None
    return ctx.sticky.member(request.cookies.get(ctx.config.router.sticky_cookie), launch.repo_key)


@functools.lru_cache(maxsize=8)
def _cookie_attributes(name: str, max_age: int, secure: bool) -> str:
    """What follows the value in a sticky cookie's Set-Cookie, exactly as aiohttp's
    `set_cookie` writes it; made once per setting instead of a Morsel per launch."""
    response = web.StreamResponse()
    response.set_cookie(name, "v", max_age=max_age, path="/", httponly=True, samesite="Lax", secure=secure)
    return response.cookies[name].OutputString().partition(";")[2]


def set_sticky_cookie(ctx: RouterContext, request: web.Request, response: web.StreamResponse, member: str,
                      launch: LaunchRequest) -> None:
    """Remember where this launch went, for the visitor's next launch of the repository (router.sticky).

    The path is fixed (`/`): a launch path is the visitor's text, and `;` in it would add
    cookie attributes of their choosing. `Secure` whenever the visitor came over https.
    """
    router = ctx.config.router
    max_age = int(router.cookie_max_age_hours * 3600)
    if max_age > 0:
        # The signed value is [a-z0-9-] . base64url: nothing in it needs quoting.
        attributes = _cookie_attributes(router.sticky_cookie, max_age, is_https(request, router.trusted_networks))
        response.headers.add(hdrs.SET_COOKIE,
                             f"{router.sticky_cookie}={ctx.sticky.sign(member, launch.repo_key)};{attributes}")


def family_of(path: str) -> str:
    return path.lstrip("/").split("/", 1)[0]


def parse_request(request: web.Request) -> LaunchRequest:
    # raw_path keeps the visitor's escaping exactly, so the member sees what was asked.
    path, _, query = request.raw_path.partition("?")
    return parse_launch(path, query)


async def decide(ctx: RouterContext, launch: LaunchRequest, sticky: str | None) -> tuple[Decision, FederationView]:
    """Place a launch on a fresh snapshot; returns the decision and the view it saw."""
    started = time.perf_counter()
    view = await ctx.view_for(launch)
    decision = place(view, launch, ctx.config.policy, ctx.rng, sticky=sticky)
    ctx.metrics.observe_decision(decision.strategy, time.perf_counter() - started)
    return decision, view


def in_flight_limit(view: FederationView, name: str, headroom: int) -> int | None:
    """How many launches member `name` may have in flight, given the pods it last reported.

    None (no limit) when its capacity is unknown or unlimited, or when placement chose it
    although it has no room (panic: capacity deliberately ignored).
    """
    member = view.by_name(name)
    free = member.free(headroom) if member is not None else None
    if free is None or free <= 0:
        return None
    return member.in_flight + free


async def admit(ctx: RouterContext, request: web.Request, launch: LaunchRequest,
                sticky: str | None) -> Decision | web.Response:
    """Place a launch and count it in flight on its member, never beyond the member's room
    nor its repository's cap (`limits.repo_cap_for`); the 429 to send when the cap refused it."""
    headroom = ctx.config.policy.pod_headroom
    cap = limits.repo_cap_for(ctx, launch)
    for attempt in range(ADMIT_ATTEMPTS):
        decision, view = await decide(ctx, launch, sticky)
        if decision.member is None:
            return decision
        result = await record(ctx, launch, decision, limit=in_flight_limit(view, decision.member.name, headroom),
                              repo_cap=cap)
        if result:
            return decision
        if result.refused == REPO_CAP:
            assert cap is not None
            return limits.repo_cap_refused(ctx, request, launch, result.repo_in_flight, cap)
        log.debug("member %s filled up while launch %s was placed (attempt %d); placing it again",
                  decision.member.name, launch.provider_spec, attempt + 1)
    log.warning("launch %s: every member it was placed on filled up first (%d attempts)",
                launch.provider_spec, ADMIT_ATTEMPTS)
    return replace(decision, member=None, reason="none")


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


async def record(ctx: RouterContext, launch: LaunchRequest, decision: Decision, *, limit: int | None = None,
                 repo_cap: limits.RepoCap | None = None) -> RecordResult:
    """Count the launch in flight on its member, log it and export it.

    With a `limit` (see `Store.record_launch`), only while the member has fewer launches
    in flight. With a `repo_cap`, the launch is new: it is also counted towards its
    repository, and only while the repository has room under its cap; a failover attempt
    of a launch already counted passes none. The answer says whether it was counted.
    """
    assert decision.member is not None
    event = launch_event(launch, decision)
    result = await ctx.store.record_launch(
        decision.member.name, ctx.config.policy.in_flight_ttl, event, limit=limit,
        repo_key=launch.repo_key if repo_cap is not None else None, repo_ttl=ctx.config.limits.repo_launch_ttl,
        repo_cap=repo_cap.room if repo_cap is not None else None)
    if not result:
        return result
    ctx.launch_log.write(event)
    ctx.metrics.count_launch(decision.member.name, decision.reason, launch.family)
    return result


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
    if request.method == "HEAD":
        return head_answer(ctx, launch)
    # Bans and rate limits, before placement; relayed /build/ streams come through here too.
    refusal = await limits.check_limits(ctx, request, launch)
    if refusal is not None:
        return refusal
    if ctx.config.router.forward_for(launch.family) == "stream":
        if launch.family == "build":
            return await relay.relay_build(request, ctx, launch)
        return launch_page.serve(request, launch, ctx.config)
    decision = await admit(ctx, request, launch, sticky_member(ctx, request, launch))
    if isinstance(decision, web.StreamResponse):
        return decision
    if decision.member is None:
        return no_member(ctx, launch, decision)
    member = decision.member
    # The target is the visitor's own path and query, already checked by parse_launch to
    # start with /v2/, /build/ or /repo/: the result never leaves the member's URL.
    response = web.Response(
        status=307,
        text=f"Redirecting to {member.name}",
        headers={**CORS_HEADERS, "Location": member.url + launch.target,
                 MEMBER_HEADER: member.name, REASON_HEADER: decision.reason},
    )
    set_sticky_cookie(ctx, request, response, member.name, launch)
    # Each routed launch is one line of the launch log (launch_log.sink), made for that;
    # a second line per redirect here would cost the redirect path a tenth of its time.
    if log.isEnabledFor(logging.DEBUG):
        log.debug("launch %s -> %s (%s)", launch.provider_spec, member.name, decision.reason,
                  extra={"member": member.name, "reason": decision.reason, "repo_key": launch.repo_key})
    return response


def head_answer(ctx: RouterContext, launch: LaunchRequest) -> web.Response:
    """HEAD of a launch link (link checkers, previews): whether it would launch, without
    placing it, counting it in flight or against any limit."""
    rule = limits.ban_for(ctx.config.limits, launch)
    if rule is not None:
        return refuse(launch.family, 403, "Repository not available", rule.message or limits.BANNED_MESSAGE)
    content_type = "text/event-stream" if launch.family == "build" else "text/html"
    return web.Response(status=200, headers={**CORS_HEADERS, "Content-Type": content_type, "Cache-Control": "no-store"})


async def handle_preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={**CORS_HEADERS, "Access-Control-Allow-Methods": "GET, OPTIONS"})
