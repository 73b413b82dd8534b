"""The admission pipeline: limits -> place -> record, the one way a launch gets a member.

The redirect handler (router.launch) and the stream relay (router.relay) both call
`admit()` for a new launch; the relay calls `admit_next()` to move a failed launch to
the next member of its ranking. What a step may see is read once, at its start: the
membership snapshot (the members and the config in force, federation.membership),
handed down to every part of it, and the store's state in one `launch_state` call
(`RouterContext.view_for`).

1. **limits** (router.limits): bans and rate windows; a refusal is the answer.
2. **place** (federation.placement.place) on a fresh view.
3. **record** (`Store.record_launch`): the launch counted in flight on its member in one
   atomic step, never beyond the member's room nor its repository's cap; launch log
   and metrics.

Placements read in-flight counts from a snapshot; replicas (and concurrent requests of
one replica) read the same counts before any of them records. So a launch is counted
against its member's room in one atomic store call, and placed again from a fresh
snapshot when the room went to a concurrent launch. A refusal means the member was full
at that moment, so the next snapshot passes it over: a few attempts are enough.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from aiohttp import web

from federation.config import FederationConfig
from federation.members import Member
from federation.membership import MembershipSnapshot
from federation.placement.decision import Decision, why_not
from federation.placement.place import place
from federation.placement.view import FederationView
from federation.spec import LaunchRequest
from federation.stores.protocol import REPO_CAP, RecordResult

from . import limits
from .context import RouterContext
from .pages import refuse

log = logging.getLogger("binderfed.router")

MEMBER_HEADER = "X-Binder-Federation-Member"
REASON_HEADER = "X-Binder-Federation-Reason"
FAILOVER_REASON = "failover"
ADMIT_ATTEMPTS = 4


@dataclass(frozen=True)
class Admission:
    """What the pipeline did with a launch: counted it on `decision.member`, or refused it."""

    decision: Decision | None = None
    refusal: web.Response | None = None  # the answer to send instead (403, 429, 503)


async def admit(ctx: RouterContext, snapshot: MembershipSnapshot, request: web.Request, launch: LaunchRequest,
                sticky: str | None) -> Admission:
    """Check the limits, place the launch and count it in flight on its member, all with
    the members and settings of `snapshot` (the caller's one read of it)."""
    config = snapshot.config
    refusal = await limits.check_limits(ctx, config, request, launch)
    if refusal is not None:
        return Admission(refusal=refusal)
    cap = limits.repo_cap_for(ctx, config, launch)
    headroom = config.policy.pod_headroom
    for attempt in range(ADMIT_ATTEMPTS):
        decision, view = await _decide(ctx, snapshot, launch, sticky)
        if decision.member is None:
            return Admission(refusal=_no_member(ctx, config, launch, decision))
        result = await _record(ctx, config, launch, decision,
                               limit=in_flight_limit(view, decision.member.name, headroom), repo_cap=cap)
        if result:
            return Admission(decision=decision)
        if result.refused == REPO_CAP:
            assert cap is not None
            return Admission(refusal=limits.repo_cap_refused(ctx, config, request, launch, result.repo_in_flight, cap))
        log.debug("member %s filled up while launch %s was placed (attempt %d); placing it again",
                  decision.member.name, launch.provider_spec, attempt + 1)
    log.warning("launch %s: every member it was placed on filled up first (%d attempts)",
                launch.provider_spec, ADMIT_ATTEMPTS)
    return Admission(refusal=_no_member(ctx, config, launch, replace(decision, member=None, reason="none")))


async def admit_next(ctx: RouterContext, launch: LaunchRequest, decision: Decision, tried: set[str]) -> Member | None:
    """The next member of `decision`'s ranking that can still take the launch (a failover),
    with the launch counted in flight there; None when none can. Not counted against the
    limits again: the launch already was, once. Reads the snapshot in force now, once:
    a member that left since the decision is not tried."""
    snapshot = ctx.snapshot
    config = snapshot.config
    view = await ctx.view_for(launch, snapshot)  # what changed since the decision: drains, ejections, room
    headroom = config.policy.pod_headroom
    panic = decision.reason in ("panic", "prime")  # the ranking ignores capacity or health already
    for name in decision.ranking:
        current = view.by_name(name)
        if name in tried or current is None or "\n" in name or "\r" in name:  # the name goes in an `id:` line
            continue
        if not panic and why_not(current, view.now, headroom) is not None:
            continue
        attempt = replace(decision, member=current.member, reason=FAILOVER_REASON)
        if await _record(ctx, config, launch, attempt, limit=in_flight_limit(view, name, headroom)):
            return current.member
    return None


async def _decide(ctx: RouterContext, snapshot: MembershipSnapshot, launch: LaunchRequest,
                  sticky: str | None) -> tuple[Decision, FederationView]:
    """Place a launch on a fresh view; the decision and the view it saw."""
    started = time.perf_counter()
    view = await ctx.view_for(launch, snapshot)
    decision = place(view, launch, snapshot.config.policy, ctx.rng, sticky=sticky)
    ctx.metrics.observe_decision(decision.strategy, time.perf_counter() - started)
    return decision, view


def in_flight_limit(view: FederationView, name: str, headroom: int) -> int | None:
    """How many launches member `name` may have in flight, given the pods it last reported.

    None (no limit) when its capacity is unknown or unlimited, or when placement chose it
    although it has no room (panic: capacity deliberately ignored).
    """
    # From the view's arrays (MemberView.free's arithmetic): no member view built per launch.
    table = view.table
    i = table.index.get(name)
    if i is None or not table.has_quota[i]:
        return None
    in_flight = table.in_flight_of(i)
    free = int(table.quota[i]) - int(table.pods[i]) - in_flight - headroom
    if free <= 0:
        return None
    return in_flight + free


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


async def _record(ctx: RouterContext, config: FederationConfig, launch: LaunchRequest, decision: Decision, *,
                  limit: int | None = None, repo_cap: limits.RepoCap | None = None) -> RecordResult:
    """Count the launch in flight on its member, log it and export it.

    With a `limit` (see `Store.record_launch`), only while the member has fewer launches
    in flight. With a `repo_cap`, the launch is new: it is also counted towards its
    repository, and only while the repository has room under its cap; a failover attempt
    of a launch already counted passes none. The answer says whether it was counted.
    """
    assert decision.member is not None
    event = launch_event(launch, decision)
    result = await ctx.store.record_launch(
        decision.member.name, config.policy.in_flight_ttl, event, limit=limit,
        repo_key=launch.repo_key if repo_cap is not None else None, repo_ttl=config.limits.repo_launch_ttl,
        repo_cap=repo_cap.room if repo_cap is not None else None)
    if not result:
        return result
    ctx.launch_log.write(event)
    ctx.metrics.count_launch(decision.member.name, decision.reason, launch.family)
    return result


def _no_member(ctx: RouterContext, config: FederationConfig, launch: LaunchRequest, decision: Decision) -> web.Response:
    retry = config.router.retry_after
    ctx.metrics.refused.labels("no_member").inc()
    members = len(decision.candidates)
    summary = "; ".join(f"{c.name}: {c.why}" for c in decision.candidates) or "no members are configured"
    log.warning("no member can take launch %s (%s)", launch.provider_spec, summary)
    message = (
        f"No member of this Binder federation can start a server right now ({members} members, none available). "
        f"Please try again in {retry} seconds."
    )
    return refuse(launch.family, 503, "No Binder available right now", message, {"Retry-After": str(retry)})
