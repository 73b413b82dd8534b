"""A point-in-time view of the federation: everything placement may look at.

The router builds one per launch from the membership and the store (through a
`ViewBuilder`, which reuses all but the in-flight counts while nothing else changed);
the simulator does the same from its model; tests build them by hand. Placement never
sees anything else.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from ..members import Member, MemberStatus, Override
from .member_view import MemberView
from .table import MemberTable


class FederationView:
    """Every member as placement sees it at one instant, plus the image holders it may need.

    `members` is the readable form (one `MemberView` each), `table` the form placement
    computes on (federation/placement/table.py). A view built by hand derives the table from its
    members on first use; a `ViewBuilder` view derives its members from the table and
    its in-flight counts only when something reads them (the explain API, the status
    page, stream mode's failover), since most launches never do.
    """

    __slots__ = ("now", "cache", "_members", "_table", "_base")

    def __init__(
        self,
        members: tuple[MemberView, ...] = (),
        now: float = 0.0,
        # repository key -> names of members known to hold its image. The router fills
        # in only the entry for the launch at hand; the simulator may pass them all.
        cache: Mapping[str, frozenset[str]] | None = None,
        *,
        table: MemberTable | None = None,
        base: tuple[MemberView, ...] | None = None,
    ):
        self.now = now
        self.cache = cache if cache is not None else {}
        self._members: tuple[MemberView, ...] | None = None if base is not None else tuple(members)
        self._table = table
        # A builder's view: its member views without in-flight counts (the table has them).
        self._base = base

    @property
    def members(self) -> tuple[MemberView, ...]:
        if self._members is None:
            counts = self.table.in_flight_list
            self._members = tuple(self._counted(i, count) for i, count in enumerate(counts))
        return self._members

    @property
    def table(self) -> MemberTable:
        if self._table is None:
            self._table = MemberTable.of(self.members)
        return self._table

    def by_name(self, name: str) -> MemberView | None:
        i = self.table.index.get(name)
        if i is None:
            return None
        if self._members is None:  # one member of a builder's view: leave the others unbuilt
            return self._counted(i, self.table.in_flight_of(i))
        return self._members[i]

    def _counted(self, i: int, count: int) -> MemberView:
        """A builder's view of member `i`: its base view with `count` launches in flight."""
        assert self._base is not None
        return replace(self._base[i], in_flight=count) if count else self._base[i]

    def __repr__(self) -> str:
        return f"FederationView(members={self.members!r}, now={self.now!r}, cache={self.cache!r})"


def member_views(
    members: tuple[Member, ...] | list[Member],
    statuses: Mapping[str, MemberStatus],
    in_flight: Mapping[str, int],
    overrides: Mapping[str, Override],
    ejections: Mapping[str, float],
) -> tuple[MemberView, ...]:
    return tuple(
        MemberView(
            member=m,
            status=statuses.get(m.name) or MemberStatus(name=m.name),
            in_flight=in_flight.get(m.name, 0),
            override=overrides.get(m.name),
            ejected_until=ejections.get(m.name, 0.0),
        )
        for m in members
    )


class ViewBuilder:
    """Views for a stream of launches, rebuilding only what changed since the previous one.

    Between two probe rounds only in-flight counts, the clock and the image holders of
    the launch change; the member set, statuses, overrides and ejections usually do not.
    The builder keeps the member views and the `MemberTable` of those and, per launch,
    swaps in the in-flight counts: a Python loop over the members with launches in
    flight and a few array operations, instead of a `MemberView` per member. Statuses
    are compared by equality, which is cheap when the store hands back the same objects
    for unchanged members (both stores do).
    """

    def __init__(self) -> None:
        self._inputs: tuple[tuple[Member, ...], dict, dict, dict] | None = None
        self._views: tuple[MemberView, ...] = ()
        self._table: MemberTable | None = None
        self._hashes: dict[str, int] = {}  # member name -> its rendezvous hash, for the current members only

    def build(
        self,
        members: tuple[Member, ...] | list[Member],
        statuses: Mapping[str, MemberStatus],
        in_flight: Mapping[str, int],
        overrides: Mapping[str, Override],
        ejections: Mapping[str, float],
        cache: Mapping[str, frozenset[str]],
        now: float,
    ) -> FederationView:
        inputs = self._inputs
        if (
            inputs is None
            or inputs[0] != tuple(members)
            or inputs[1] != statuses
            or inputs[2] != overrides
            or inputs[3] != ejections
        ):
            self._inputs = (tuple(members), dict(statuses), dict(overrides), dict(ejections))
            self._views = member_views(members, statuses, {}, overrides, ejections)
            current = {m.name for m in members}
            if self._hashes.keys() - current:  # members that left: forget them (the cache stays bounded)
                self._hashes = {name: h for name, h in self._hashes.items() if name in current}
            self._table = MemberTable.of(self._views, self._hashes)
        assert self._table is not None
        return FederationView(now=now, cache=cache, table=self._table.with_in_flight(in_flight), base=self._views)
