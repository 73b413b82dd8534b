"""The current member set, merged from membership sources.

Sources (the YAML file, Consul, ...) each publish their own list; the merged set
is what the router routes over. Precedence when two sources name the same member:
the file wins over discovery, so an operator's declaration is never overridden by
a registration. Runtime drain/weight overrides live in the store, not here.
"""

from __future__ import annotations

from typing import Callable, Iterable

from .members import Member

# Lower number wins when two sources declare the same member name.
SOURCE_PRECEDENCE = {"config": 0, "consul": 1}


class Membership:
    def __init__(self, members: Iterable[Member] = ()):
        self._by_source: dict[str, tuple[Member, ...]] = {}
        self._merged: tuple[Member, ...] = ()
        self._listeners: list[Callable[[tuple[Member, ...]], None]] = []
        self.set_source("config", members)

    def members(self) -> tuple[Member, ...]:
        return self._merged

    def get(self, name: str) -> Member | None:
        for member in self._merged:
            if member.name == name:
                return member
        return None

    def set_source(self, source: str, members: Iterable[Member]) -> None:
        """Replace everything `source` declares; members it no longer names leave rotation."""
        self._by_source[source] = tuple(members)
        merged: dict[str, Member] = {}
        for name in sorted(self._by_source, key=lambda s: SOURCE_PRECEDENCE.get(s, 99), reverse=True):
            for member in self._by_source[name]:
                merged[member.name] = member
        self._merged = tuple(sorted(merged.values(), key=lambda m: m.name))
        for listener in list(self._listeners):
            listener(self._merged)

    def subscribe(self, listener: Callable[[tuple[Member, ...]], None]) -> None:
        self._listeners.append(listener)
