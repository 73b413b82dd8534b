"""The membership snapshot: the members and the settings in force, as one immutable object.

Every membership source (`federation.sources`: the YAML file, Consul's catalog) is a
provider that publishes its own member list through `Membership.publish`; the file
publishes the settings it declares in the same call. Each publish builds a new
`MembershipSnapshot` (the merged members and the config in force) and swaps it in with
one assignment, in the manner of a dynamic-config proxy. A request reads
`Membership.snapshot` once and uses only that, so it sees the members and the settings
of one moment: never new members with old settings.

Precedence when two sources name the same member: the file wins over discovery, so an
operator's declaration is never overridden by a registration. Admin overrides (drain,
weight) are not a member list: they live in the store, so every replica sees them at
once, and a launch reads them in its one store read (`Store.launch_state`), applied on
top of the snapshot's members by the view (`federation.placement.view`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from .config import FederationConfig
from .members import Member

# Lower number wins when two sources declare the same member name.
SOURCE_PRECEDENCE = {"config": 0, "consul": 1}


@dataclass(frozen=True)
class MembershipSnapshot:
    """The federation as configured at one moment: every source's members merged, and the
    settings in force (`config`; its `members` are the file's own, `members` here are all)."""

    config: FederationConfig
    members: tuple[Member, ...]
    version: int = 0  # counts publishes: a newer snapshot has a larger one
    by_name: Mapping[str, Member] = field(default_factory=dict, compare=False, repr=False)

    def get(self, name: str) -> Member | None:
        return self.by_name.get(name)


class Membership:
    """Holds the current `MembershipSnapshot` and builds the next one on every publish."""

    def __init__(self, members: Iterable[Member] = (), config: FederationConfig | None = None):
        members = tuple(members)
        self._by_source: dict[str, tuple[Member, ...]] = {"config": members}
        self._listeners: list[Callable[[tuple[Member, ...]], None]] = []
        self._snapshot = _snapshot(config or FederationConfig(members=members), self._by_source, 0)

    @property
    def snapshot(self) -> MembershipSnapshot:
        """Read it once per request and keep using that one."""
        return self._snapshot

    def members(self) -> tuple[Member, ...]:
        return self._snapshot.members

    def get(self, name: str) -> Member | None:
        return self._snapshot.get(name)

    def publish(self, source: str, members: Iterable[Member] | None = None, *,
                config: FederationConfig | None = None) -> MembershipSnapshot:
        """Put what `source` declares in force, in one swap: its members (all it declares:
        members it no longer names leave rotation) and, from the file, the settings."""
        if members is not None:
            self._by_source[source] = tuple(members)
        previous = self._snapshot
        self._snapshot = _snapshot(config or previous.config, self._by_source, previous.version + 1)
        if self._snapshot.members != previous.members:
            for listener in list(self._listeners):
                listener(self._snapshot.members)
        return self._snapshot

    def set_source(self, source: str, members: Iterable[Member]) -> None:
        """Replace everything `source` declares (a source without settings of its own)."""
        self.publish(source, members)

    def subscribe(self, listener: Callable[[tuple[Member, ...]], None]) -> None:
        """`listener(members)` after every publish that changed the member set."""
        self._listeners.append(listener)


def _snapshot(config: FederationConfig, by_source: Mapping[str, tuple[Member, ...]], version: int) -> MembershipSnapshot:
    merged: dict[str, Member] = {}
    for name in sorted(by_source, key=lambda s: SOURCE_PRECEDENCE.get(s, 99), reverse=True):
        for member in by_source[name]:
            merged[member.name] = member
    members = tuple(sorted(merged.values(), key=lambda m: m.name))
    return MembershipSnapshot(config, members, version, {m.name: m for m in members})
