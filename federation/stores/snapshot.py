"""A shared store's local snapshot: what a launch reads, kept in this process.

`RedisStore` answers `launch_state` from here, so a launch costs one round trip (the
record step) instead of two. The store keeps it fresh: a background refresh every
`refresh_period` seconds (statuses, overrides and ejections only when their change
counter moved; in-flight counts every time), the counts the record step returns, and
this replica's own writes, applied at once.

Versions order what arrives out of order over several connections: Redis counts every
change of a kind (``versions`` hash), every answer carries the count it saw, and an
older answer never overwrites a newer one.
"""

from __future__ import annotations

import collections
import heapq
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

KINDS = ("status", "override", "ejection")


@dataclass
class _Count:
    """One member's launches in flight: `base` as Redis counted them at `version`, of
    which `own` (expiry times, a heap) are this replica's, so they expire here on time."""

    base: int = 0
    version: int = -1
    own: list[float] = field(default_factory=list)

    def live(self, now: float) -> int:
        while self.own and self.own[0] <= now:
            heapq.heappop(self.own)
            self.base -= 1
        return max(self.base, 0)


class Snapshot:
    """Statuses, overrides, ejections, in-flight counts and recent image holders."""

    def __init__(self, holders_ttl: float, holders_max: int = 10_000):
        self.parts: dict[str, Mapping[str, Any]] = {kind: {} for kind in KINDS}
        self.known: dict[str, int] = {kind: -1 for kind in KINDS}     # the versions `parts` hold
        self._written: dict[str, int] = {kind: -1 for kind in KINDS}  # the newest own write of each kind
        self._counts: dict[str, _Count] = {}
        # What `in_flight` answers, kept as counts change, so that a launch's read is a dict
        # copy rather than a pass over every member with launches: each member's live count,
        # and when this replica's own launches expire (a heap of (expiry, member)).
        self._live: dict[str, int] = {}
        self._expiries: list[tuple[float, str]] = []
        self.epoch = ""
        self.holders_ttl = holders_ttl
        self.holders_max = holders_max
        self._holders: collections.OrderedDict[str, tuple[float, dict[str, float]]] = collections.OrderedDict()

    def new_epoch(self, epoch: str) -> bool:
        """Whether Redis's data is a new run (restarted empty, flushed): its versions start
        again from 0, so every version held here is forgotten."""
        if epoch == self.epoch:
            return False
        self.epoch = epoch
        self.known = {kind: -1 for kind in KINDS}
        self._written = {kind: -1 for kind in KINDS}
        for entry in self._counts.values():
            entry.version = -1
        return True

    # -- statuses, overrides, ejections ------------------------------------------------
    def refreshed(self, kind: str, version: int, value: Mapping[str, Any]) -> None:
        """A refresh read `kind` whole at `version` (ignored when an own write is newer)."""
        if version >= self._written[kind]:
            self.parts[kind] = value
            self.known[kind] = version

    def wrote(self, kind: str, version: int, changes: Mapping[str, Any | None]) -> None:
        """This replica wrote `changes` (None: removed) of `kind`; Redis counted it as `version`."""
        merged = dict(self.parts[kind])
        for name, value in changes.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        self.parts[kind] = merged
        self._written[kind] = max(self._written[kind], version)

    # -- in flight ---------------------------------------------------------------------
    def counted(self, member: str, count: int, version: int, own_expiry: float | None = None) -> None:
        """The record step saw `count` launches of `member` at `version` (including this one when counted)."""
        entry = self._counts.setdefault(member, _Count())
        if version >= entry.version:
            entry.base, entry.version = count, version
        if own_expiry is not None:
            heapq.heappush(entry.own, own_expiry)
            heapq.heappush(self._expiries, (own_expiry, member))
        self._recount(member, entry)

    def settled(self, member: str, seen: int) -> None:
        """This replica released `seen` of `member`'s launches (a failed attempt, or the
        prober seeing them as pods). Redis pops the soonest to expire, whoever's they are;
        here as many of this replica's own go, the soonest first, or a released one would
        count the member down again when it expires. (Should Redis have popped another
        replica's instead, this replica counts one too many until the next refresh: the
        safe side.)"""
        entry = self._counts.get(member)
        if entry is None or seen <= 0:
            return
        entry.base = max(entry.base - seen, 0)
        for _ in range(min(seen, len(entry.own))):
            heapq.heappop(entry.own)
        self._recount(member, entry)

    def refreshed_counts(self, counts: Mapping[str, int], version: int, now: float) -> None:
        """A refresh counted every member's live launches at `version`."""
        for member in self._counts.keys() | counts.keys():
            entry = self._counts.setdefault(member, _Count())
            if version > entry.version:
                while entry.own and entry.own[0] <= now:  # Redis dropped those itself
                    heapq.heappop(entry.own)
                entry.base, entry.version = counts.get(member, 0), version
            if entry.base <= 0 and not entry.own:
                del self._counts[member]
            self._recount(member, entry)

    def in_flight(self, now: float) -> dict[str, int]:
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, member = heapq.heappop(expiries)
            entry = self._counts.get(member)
            if entry is not None:
                entry.live(now)
                self._recount(member, entry)
        return dict(self._live)

    def _recount(self, member: str, entry: _Count) -> None:
        if entry.base > 0:
            self._live[member] = entry.base
        else:
            self._live.pop(member, None)

    # -- image holders -----------------------------------------------------------------
    def holders(self, repo_key: str, now: float) -> frozenset[str] | None:
        """The holders of `repo_key`, or None when not read within `holders_ttl` seconds."""
        entry = self._holders.get(repo_key)
        if entry is None or time.monotonic() - entry[0] >= self.holders_ttl:
            return None
        self._holders.move_to_end(repo_key)
        return frozenset(member for member, expiry in entry[1].items() if expiry > now)

    def set_holders(self, repo_key: str, scored: list[tuple[str, float]]) -> None:
        self._holders[repo_key] = (time.monotonic(), dict(scored))
        self._holders.move_to_end(repo_key)
        while len(self._holders) > self.holders_max:
            self._holders.popitem(last=False)

    def learned(self, repo_key: str, member: str, expiry: float) -> None:
        """This replica learned an image: seen at once if the repository is cached."""
        entry = self._holders.get(repo_key)
        if entry is not None:
            entry[1][member] = expiry
