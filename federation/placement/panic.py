"""Panic: when nobody is admissible, ignore capacity, then health, then give up (Envoy-style).

Applied by `place()` whatever the strategy, when the admissible set is empty. It never
sends a launch to a member operators took out (draining, weight 0), and never to one
whose last probe got no answer at all (`MemberStatus.reachable`): that one would fail
the launch for certain.
"""

from __future__ import annotations

from ..members import Member, MemberState
from .decision import Decision, candidates
from .ranking import Context

HEALTHY = MemberState.HEALTHY
FULL = MemberState.FULL


def panic(ctx: Context) -> Decision:
    """The decision for a launch no member is admissible for."""
    settings = ctx.settings
    view = ctx.view
    now = view.now
    members = view.members
    names = ctx.table.names

    def decision(member: Member | None, reason: str, order: list[int]) -> Decision:
        return Decision(
            member=member,
            reason=reason,
            strategy=settings.strategy,
            ranking=tuple(names[i] for i in order),
            candidates=candidates(view, settings.pod_headroom, dict),
            data_site=ctx.data_site,
        )

    if not settings.panic:
        return decision(None, "none", [])

    usable = [i for i, mv in enumerate(members) if not mv.draining and mv.weight > 0]

    # (a) Ignore capacity: healthy-but-full members, least loaded first.
    full = [
        i for i in usable if members[i].status.state in (HEALTHY, FULL) and not members[i].ejected(now)
    ]
    if full:

        def by_load(i: int) -> tuple[bool, float]:
            ratio = members[i].load_ratio()
            return (ratio is None, ratio or 0.0)

        full.sort(key=by_load)
        return decision(members[full[0]].member, "panic", full)

    # (b) Ignore health too, but not members that cannot even be reached: prime first.
    reachable = [i for i in usable if members[i].status.reachable]
    if reachable:
        reachable.sort(key=lambda i: not members[i].member.prime)
        chosen = members[reachable[0]].member
        return decision(chosen, "prime" if chosen.prime else "panic", reachable)

    return decision(None, "none", [])
