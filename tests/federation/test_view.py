"""ViewBuilder: the router's per-launch views see every change the moment the store has it."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from federation.config import PolicySettings
from federation.members import Member, MemberState, MemberStatus, Override
from federation.placement.place import place
from federation.placement.view import ViewBuilder

NOW = 10_000.0
MEMBERS = tuple(Member(name=f"m{i}", url=f"https://m{i}.example.org") for i in range(12))


@dataclass(frozen=True)
class Launch:
    repo_key: str = "gh/org/repo"
    data_site: str | None = None


def healthy(member: Member, pods: int = 0, quota: int = 10) -> MemberStatus:
    return MemberStatus(name=member.name, state=MemberState.HEALTHY, reason="ok", quota=quota, has_quota=True,
                        total_pods=pods, checked_at=NOW)


STATUSES = {m.name: healthy(m) for m in MEMBERS}


def chosen(view) -> str:
    return place(view, Launch(), PolicySettings(), random.Random(0)).member.name


def test_builder_views_place_like_views_built_from_scratch():
    builder = ViewBuilder()
    in_flight = {"m3": 4, "m7": 9}
    for now in (NOW, NOW + 1):  # the second build reuses the first one's member data
        fresh = ViewBuilder().build(MEMBERS, STATUSES, in_flight, {}, {}, {}, now)  # a builder that saw nothing before
        built = builder.build(MEMBERS, STATUSES, in_flight, {}, {}, {}, now)
        assert built.members == fresh.members
        assert chosen(built) == chosen(fresh)


def test_status_override_and_membership_changes_reach_the_next_view():
    builder = ViewBuilder()
    first = chosen(builder.build(MEMBERS, STATUSES, {}, {}, {}, {}, NOW))

    down = {**STATUSES, first: replace(STATUSES[first], state=MemberState.UNHEALTHY, reason="failed checks")}
    assert chosen(builder.build(MEMBERS, down, {}, {}, {}, {}, NOW)) != first

    drained = {first: Override(draining=True)}
    assert chosen(builder.build(MEMBERS, STATUSES, {}, drained, {}, {}, NOW)) != first

    fewer = tuple(m for m in MEMBERS if m.name != first)
    view = builder.build(fewer, STATUSES, {}, {}, {}, {}, NOW)
    assert chosen(view) != first and view.by_name(first) is None

    assert chosen(builder.build(MEMBERS, STATUSES, {}, {}, {}, {}, NOW)) == first


def test_in_flight_counts_change_per_launch_without_a_rebuild():
    builder = ViewBuilder()
    first = chosen(builder.build(MEMBERS, STATUSES, {}, {}, {}, {}, NOW))
    full = builder.build(MEMBERS, STATUSES, {first: 10}, {}, {}, {}, NOW)  # its whole quota in flight
    assert chosen(full) != first
    assert full.by_name(first).in_flight == 10 and full.by_name(first).free(0) == 0
    assert chosen(builder.build(MEMBERS, STATUSES, {}, {}, {}, {}, NOW)) == first


def test_an_ejection_ends_with_time_alone():
    builder = ViewBuilder()
    first = chosen(builder.build(MEMBERS, STATUSES, {}, {}, {}, {}, NOW))
    ejections = {first: NOW + 30}
    assert chosen(builder.build(MEMBERS, STATUSES, {}, {}, ejections, {}, NOW)) != first
    assert chosen(builder.build(MEMBERS, STATUSES, {}, {}, ejections, {}, NOW + 31)) == first


def test_a_view_keeps_the_in_flight_counts_it_was_built_with():
    """The router may change its mapping afterwards; the view is a snapshot."""
    builder = ViewBuilder()
    in_flight = {"m1": 2}
    view = builder.build(MEMBERS, STATUSES, in_flight, {}, {}, {}, NOW)
    in_flight["m1"] = 7
    assert view.by_name("m1").in_flight == 2
    assert [m.in_flight for m in view.members if m.name == "m1"] == [2]


def test_in_flight_counts_of_many_members_land_on_their_members_and_unknown_names_are_dropped():
    """Beyond a few members the counts are placed with array operations: each on its own
    member, none on a member the view does not hold (one that left since the store counted it)."""
    builder = ViewBuilder()
    in_flight = {f"m{i}": i + 1 for i in range(0, 12, 2)} | {"gone": 5, "also-gone": 2, "m11": 7}
    view = builder.build(MEMBERS, STATUSES, in_flight, {}, {}, {}, NOW)
    expected = [in_flight.get(m.name, 0) for m in MEMBERS]
    assert view.table.in_flight.tolist() == expected
    assert [view.by_name(m.name).in_flight for m in MEMBERS] == expected
