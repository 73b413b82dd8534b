"""A point-in-time view of the federation: everything placement may look at.

The router builds one per launch from the membership and the store; the
simulator builds them from its model. Placement never sees anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .members import Member, MemberState, MemberStatus, Override


@dataclass(frozen=True)
class MemberView:
    """One member as placement sees it: declaration + last probe + live counters."""

    member: Member
    status: MemberStatus
    in_flight: int = 0
    override: Override | None = None
    ejected_until: float = 0.0

    @property
    def name(self) -> str:
        return self.member.name

    @property
    def weight(self) -> float:
        if self.override is not None and self.override.weight is not None:
            return float(self.override.weight)
        return self.member.weight

    @property
    def draining(self) -> bool:
        return self.override is not None and self.override.draining

    def ejected(self, now: float) -> bool:
        return self.ejected_until > now

    def state(self, now: float) -> MemberState:
        """The one word shown for this member. Operator and passive health win over probes."""
        if self.draining:
            return MemberState.DRAINING
        if self.ejected(now):
            return MemberState.EJECTED
        return self.status.state

    def free(self, headroom: int) -> int | None:
        """Free launch slots, or None when capacity is unknown or unlimited."""
        if self.status.quota is None:
            return None
        return self.status.quota - self.status.total_pods - self.in_flight - headroom

    def load_ratio(self) -> float | None:
        """(pods + in-flight) / quota, or None when capacity is unknown or unlimited."""
        if not self.status.quota:
            return None
        return (self.status.total_pods + self.in_flight) / self.status.quota


@dataclass(frozen=True)
class FederationView:
    members: tuple[MemberView, ...]
    now: float
    # repository key -> names of members known to hold its image. The router fills in
    # only the entry for the launch at hand; the simulator may pass them all.
    cache: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def by_name(self, name: str) -> MemberView | None:
        for view in self.members:
            if view.name == name:
                return view
        return None


def build_view(
    members: tuple[Member, ...] | list[Member],
    statuses: Mapping[str, MemberStatus],
    in_flight: Mapping[str, int],
    overrides: Mapping[str, Override],
    ejections: Mapping[str, float],
    cache: Mapping[str, frozenset[str]],
    now: float,
) -> FederationView:
    return FederationView(
        members=tuple(
            MemberView(
                member=m,
                status=statuses.get(m.name) or MemberStatus(name=m.name),
                in_flight=in_flight.get(m.name, 0),
                override=overrides.get(m.name),
                ejected_until=ejections.get(m.name, 0.0),
            )
            for m in members
        ),
        now=now,
        cache=cache,
    )
