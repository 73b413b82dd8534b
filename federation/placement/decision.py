"""A placement decision and its explanation: what `place()` answers.

`Decision` names the member, the reason and the failover order; `Candidate` says of
every member why it was or was not admissible (the explain API shows both). Both
explanations are computed only when somebody reads them (`Lazy`): at a thousand
members they cost more than the decision itself, and most launches never read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ..members import Member, MemberState
from .member_view import MemberView
from .view import FederationView

HEALTHY = MemberState.HEALTHY
FULL = MemberState.FULL


@dataclass(frozen=True)
class Candidate:
    """One member as the decision saw it."""

    name: str
    admissible: bool
    why: str  # "admissible", "draining", "weight 0", "ejected", "unhealthy: ...", "unknown: ...", "full: ..."
    tier: str = ""  # "data" | "cache" | "affinity" | "": the locality tier that ranked it
    load_ratio: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "admissible": self.admissible,
            "why": self.why,
            "tier": self.tier,
            "load_ratio": self.load_ratio,
        }


@dataclass(frozen=True)
class Decision:
    """Where a launch goes, why, and where it goes next if that member fails.

    `ranking` lists the admissible members in failover order; `candidates` lists every
    member of the view with why it was or was not admissible. `place()` fills both with
    lazily evaluated immutable sequences: sorting or explaining a thousand members costs
    more than placing the launch, and only stream mode's failover and the explain API
    read them.
    """

    member: Member | None
    reason: str  # "cookie" | "data" | "cache" | "affinity" | "spill" | "random" | "rendezvous" | "panic" | "prime" | "none"
    strategy: str
    ranking: Sequence[str]  # member names in failover order, first = chosen
    candidates: Sequence[Candidate] = ()
    data_site: str | None = None

    @property
    def placed(self) -> bool:
        return self.member is not None

    def to_json(self) -> dict[str, Any]:
        """The explain API's JSON shape of a decision (produced only here)."""
        return {
            "member": self.member.name if self.member is not None else None,
            "url": self.member.url if self.member is not None else None,
            "reason": self.reason,
            "strategy": self.strategy,
            "data_site": self.data_site,
            "ranking": list(self.ranking),
            "candidates": [c.to_json() for c in self.candidates],
        }


def why_not(view: MemberView, now: float, headroom: int) -> str | None:
    """Why a member is not admissible, in words; None when it is admissible."""
    if view.draining:
        return "draining"
    if view.weight <= 0:
        return "weight 0"
    if view.ejected(now):
        return "ejected"
    status = view.status
    state = status.state
    if state is not HEALTHY and state is not FULL:
        return f"{state.value}: {status.reason}" if status.reason else state.value
    free = view.free(headroom)
    if free is not None and free <= 0:
        return (
            f"full: {max(free, 0)} free of quota {status.quota} "
            f"({status.total_pods} pods, {view.in_flight} in flight, headroom {headroom})"
        )
    if state is FULL:  # the probe said full although the numbers leave room (or are unknown)
        return f"full: {status.reason}" if status.reason else "full"
    return None


class Lazy(Sequence):
    """An immutable sequence computed on first use (a decision's explanation and failover
    order cost more than the decision itself at a thousand members, and most launches
    never read them)."""

    __slots__ = ("_compute", "_items", "_length")

    def __init__(self, compute: Callable[[], tuple], length: int):
        self._compute: Callable[[], tuple] | None = compute
        self._items: tuple | None = None
        self._length = length

    def _all(self) -> tuple:
        if self._items is None:
            assert self._compute is not None
            self._items = self._compute()
            self._compute = None  # let go of the arrays it held
        return self._items

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self._all()[index]

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return self._all() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


def candidates(view: FederationView, headroom: int, tiers: Callable[[], dict[int, str]]) -> Sequence[Candidate]:
    """Every member of a view with why it was or was not admissible, built on first use.

    `tiers()` gives the locality tier of the members a strategy ranked by tier
    (member position -> "data", "cache" or "affinity")."""
    now = view.now

    def compute() -> tuple[Candidate, ...]:
        labels = tiers()
        items = []
        for index, member in enumerate(view.members):
            why = why_not(member, now, headroom)
            items.append(Candidate(name=member.name, admissible=why is None, why=why or "admissible",
                                   tier=labels.get(index, ""), load_ratio=member.load_ratio()))
        return tuple(items)

    return Lazy(compute, len(view.table.names))
