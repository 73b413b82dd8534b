"""One member as placement sees it: its declaration, its last probe, its live counters.

A `FederationView` holds one per member (federation/placement/view.py) and a
`MemberTable` holds the same facts as arrays (federation/placement/table.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..members import Member, MemberState, MemberStatus, Override


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
