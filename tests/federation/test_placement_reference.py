"""place() against a plain reading of the placement rules, on generated federations.

`place()` computes on arrays, checks bounded load for its first choice only, and sorts
the failover order lazily; the reference below follows DESIGN.md and the module
docstrings of federation/placement/ member by member. Federations of 1 to 30 members
cross the size where placement switches from per-member Python to numpy, and every
view is placed twice: built by hand and built by a `ViewBuilder` as the router does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.config import PolicySettings
from federation.members import Member, MemberState, MemberStatus, Override
from federation.placement.member_view import MemberView
from federation.placement.place import data_site, place
from federation.placement.table import rendezvous_score
from federation.placement.view import FederationView, ViewBuilder

NOW = 5_000.0
REPOS = ("gh/a/one", "gh/b/two", "zenodo/10.5281/zenodo.3242074")
SITES = ("zenodo.org", "s3:eu-central-1")


@dataclass(frozen=True)
class Launch:
    repo_key: str
    data_site: str | None = None


@st.composite
def member_views(draw, index: int) -> MemberView:
    name = f"m{index:02d}"
    quota = draw(st.one_of(st.none(), st.integers(1, 40)))
    member = Member(
        name=name, url=f"https://{name}.example.org",
        weight=draw(st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 3.0])),
        data_sites=tuple(draw(st.sets(st.sampled_from(SITES), max_size=1))),
        cached_repos=tuple(draw(st.sets(st.sampled_from(REPOS), max_size=1))),
    )
    # Loads from empty to over quota, so that bounded load often passes over a first choice.
    pods = draw(st.integers(0, 45) if quota is None else
                st.sampled_from([0, 0, 1, quota // 3, quota // 2, max(quota - 4, 0), quota - 1, quota + 1]))
    status = MemberStatus(
        name=name, state=draw(st.sampled_from([MemberState.HEALTHY] * 6 + [MemberState.FULL, MemberState.UNHEALTHY])),
        reason="ok", quota=quota, has_quota=quota is not None, total_pods=pods, checked_at=NOW - 3,
    )
    override = draw(st.sampled_from([None, None, None, Override(draining=True), Override(weight=0.0),
                                     Override(weight=2.5)]))
    return MemberView(member=member, status=status, in_flight=draw(st.integers(0, 3)), override=override,
                      ejected_until=draw(st.sampled_from([0.0, 0.0, 0.0, NOW - 1, NOW + 30])))


@st.composite
def federations(draw) -> tuple[FederationView, Launch, PolicySettings, str | None]:
    count = draw(st.integers(1, 30))
    views = tuple(draw(member_views(i)) for i in range(count))
    repo = draw(st.sampled_from(REPOS))
    holders = frozenset(draw(st.sets(st.sampled_from([v.name for v in views]), max_size=3)))
    view = FederationView(members=views, now=NOW, cache={repo: holders} if holders else {})
    launch = Launch(repo, draw(st.sampled_from([None, None, *SITES])))
    policy = PolicySettings(
        strategy=draw(st.sampled_from(["bounded-affinity"] * 4 + ["rendezvous"])),
        pod_headroom=draw(st.integers(0, 3)),
        epsilon=draw(st.sampled_from([0.05, 0.25, 0.5, 1.0])),
        tiers=draw(st.sampled_from([("data", "cache", "affinity"), ("cache", "data", "affinity"),
                                    ("cache", "affinity"), ("affinity",)])),
    )
    sticky = draw(st.sampled_from([v.name for v in views])) if draw(st.integers(0, 4)) == 0 else None
    return view, launch, policy, sticky


def admissible(m: MemberView, policy: PolicySettings) -> bool:
    status = m.status
    room = status.quota is None or status.quota - status.total_pods - m.in_flight - policy.pod_headroom > 0
    return (not m.draining and m.weight > 0 and m.ejected_until <= NOW and status.state is MemberState.HEALTHY
            and room)


def reference(view: FederationView, launch: Launch, policy: PolicySettings, sticky: str | None):
    """(member name, reason, ranking) by the rules, or None when nobody is admissible."""
    members = [m for m in view.members if admissible(m, policy)]
    if not members:
        return None
    key = launch.repo_key

    def score(m: MemberView) -> float:
        return rendezvous_score(m.name, key, m.weight)

    over: set[str] = set()
    if policy.strategy == "rendezvous":
        ranked = sorted(members, key=lambda m: -score(m))
        labels = {m.name: "rendezvous" for m in ranked}
        spilled = False
    else:
        site = data_site(launch, policy.data_rules)
        tiers = list(policy.tiers[: policy.tiers.index("affinity")])

        def tier(m: MemberView) -> int:
            for position, name in enumerate(tiers):
                if name == "data" and site is not None and site in m.member.data_sites:
                    return position
                if name == "cache" and (key in m.member.cached_repos or m.name in view.cache.get(key, ())):
                    return position
            return len(tiers)

        counted = [m for m in members if m.status.quota is not None]
        if counted:
            average = (sum(m.status.total_pods + m.in_flight for m in counted) + 1) / sum(m.status.quota for m in counted)
            grow = 1 + policy.epsilon
            bound = min(grow * average, 1 - (1 - average) / grow)
            floor = policy.epsilon / grow  # below this load ratio nobody is passed over
            # load ratio > bound, multiplied out as placement does (no rounding difference at a tie)
            over = {m.name for m in counted
                    if m.status.total_pods + m.in_flight > m.status.quota * bound
                    and m.status.total_pods + m.in_flight > m.status.quota * floor}
            if len(over) == len(members):
                over = set()
        unconstrained = min(members, key=lambda m: (tier(m), -score(m)))
        spilled = unconstrained.name in over
        ranked = sorted(members, key=lambda m: (m.name in over, tier(m), -score(m)))
        labels = {m.name: (tiers + ["affinity"])[tier(m)] for m in ranked}
    names = [m.name for m in ranked]
    reason = "spill" if spilled else labels[names[0]]
    if sticky in names and sticky not in over:   # a cookie never overrides bounded load
        names.remove(sticky)
        names.insert(0, sticky)
        reason = "cookie"
    return names[0], reason, names


def builder_view(view: FederationView) -> FederationView:
    """The same view as the router builds it: a builder that saw an older state first."""
    members = [v.member for v in view.members]
    statuses = {v.name: v.status for v in view.members}
    overrides = {v.name: v.override for v in view.members if v.override is not None}
    ejections = {v.name: v.ejected_until for v in view.members if v.ejected_until}
    builder = ViewBuilder()
    builder.build(members, {}, {}, {}, {}, {}, NOW - 60)
    return builder.build(members, statuses, {v.name: v.in_flight for v in view.members}, overrides, ejections,
                         view.cache, view.now)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(federations())
def test_place_follows_the_rules_member_by_member(case):
    view, launch, policy, sticky = case
    expected = reference(view, launch, policy, sticky)
    for seen in (view, builder_view(view)):
        decision = place(seen, launch, policy, random.Random(0), sticky=sticky)
        if expected is None:
            assert decision.reason in ("panic", "prime", "none")
            continue
        member, reason, ranking = expected
        assert (decision.member.name, decision.reason) == (member, reason)
        assert list(decision.ranking) == ranking
        assert [c.name for c in decision.candidates if c.admissible] == sorted(ranking)
        # The lazily built member views of a builder's view are the hand-built ones.
        assert seen.members == view.members
