"""The embedded store: router state in this process's memory (`store.url: memory://`).

Also the local fallback of `RedisStore` while Redis is away (federation.stores.fallback).
"""

from __future__ import annotations

import collections
import heapq
import time
from typing import Any, Mapping, Sequence

from ..members import MemberStatus, Override
from .protocol import (COUNTED, MEMBER_FULL, MINUTES_KEPT, REPO_CAP, Clock, LaunchState, LimitState, RateCheck,
                       RecordResult, Store, event_minute)


class MemoryStore(Store):
    """The embedded default: one router process, nothing to install."""

    def __init__(self, clock: Clock = time.time, log_length: int = 100_000):
        super().__init__(clock)
        self._statuses: dict[str, MemberStatus] = {}
        self._in_flight: dict[str, collections.deque[float]] = {}   # member -> expiry times, oldest first
        # Kept as launches come and go, so a launch's read costs a dict copy, not a pass
        # over every member with launches: the live count of each such member, and when
        # each launch expires (a heap of (expiry, member)).
        self._live: dict[str, int] = {}
        self._expiries: list[tuple[float, str]] = []
        self._images: dict[str, dict[str, float]] = {}              # repo key -> member -> expiry
        self._overrides: dict[str, Override] = {}
        self._ejections: dict[str, float] = {}
        self._launches: collections.deque[dict[str, Any]] = collections.deque(maxlen=log_length)
        self._windows: dict[str, tuple[float, int, float]] = {}   # key -> (start, count, window)
        self._prune_windows_at = 10_000
        self._repo_in_flight: dict[str, list[float]] = {}           # repo key -> heap of expiry times
        self._prune_repos_at = 10_000
        self._leases: dict[str, tuple[str, float]] = {}
        self._per_minute: dict[int, int] = {}                        # clock minute -> launches

    async def launch_state(self, repo_key: str | None) -> LaunchState:
        return LaunchState(
            statuses=dict(self._statuses),
            in_flight=self._counts(),
            overrides=dict(self._overrides),
            ejections=dict(self._ejections),
            holders=self._holders(repo_key) if repo_key else frozenset(),
        )

    async def record_launch(self, member: str, ttl: float, event: Mapping[str, Any] | None = None, *,
                            limit: int | None = None, repo_key: str | None = None, repo_ttl: float = 0.0,
                            repo_cap: int | None = None) -> RecordResult:
        now = self.clock()
        # No await between the checks and the counts: one atomic step on the event loop.
        if repo_key is not None and repo_cap is not None:
            running = self._count_repo(repo_key, now)
            if running >= repo_cap:
                return RecordResult(False, REPO_CAP, running)
        expiries = self._in_flight.setdefault(member, collections.deque())
        if limit is not None:
            while expiries and expiries[0] <= now:
                expiries.popleft()
            if len(expiries) >= limit:
                self._recount(member)
                return RecordResult(False, MEMBER_FULL)
        expiries.append(now + ttl)
        self._live[member] = len(expiries)
        heapq.heappush(self._expiries, (now + ttl, member))
        if event is not None:
            self._launches.append(dict(event))
            self._count_minute(event_minute(event, now))
        if repo_key is not None:
            self._count_repo(repo_key, now)
            # A heap, not a deque: repo_ttl can change with a config reload, so expiries
            # are not appended in order.
            heapq.heappush(self._repo_in_flight.setdefault(repo_key, []), now + repo_ttl)
            if len(self._repo_in_flight) >= self._prune_repos_at:
                for key in list(self._repo_in_flight):
                    self._count_repo(key, now)
                self._prune_repos_at = max(10_000, 2 * len(self._repo_in_flight))
        return COUNTED

    def _count_repo(self, repo_key: str, now: float) -> int:
        expiries = self._repo_in_flight.get(repo_key)
        if expiries is None:
            return 0
        while expiries and expiries[0] <= now:
            heapq.heappop(expiries)
        if not expiries:
            del self._repo_in_flight[repo_key]
        return len(expiries)

    async def limit_launch(self, rates: Sequence[RateCheck], repo_key: str | None) -> LimitState:
        now = self.clock()
        refused, retry = None, 0.0
        for index, rate in enumerate(rates):
            allowed, reset = self._hit(rate.key, rate.limit, rate.window, now)
            if not allowed:
                refused, retry = index, reset
                break
        return LimitState(refused, retry, self._count_repo(repo_key, now) if repo_key else 0)

    async def put_status(self, status: MemberStatus) -> None:
        self._statuses[status.name] = status

    async def put_statuses(self, statuses: Sequence[MemberStatus], settled: Mapping[str, int]) -> None:
        for status in statuses:
            self._statuses[status.name] = status
        if settled:
            self._counts()  # drop expired launches once for the whole batch
            for member, seen in settled.items():
                self._settle(member, seen)

    async def statuses(self) -> dict[str, MemberStatus]:
        return dict(self._statuses)

    async def settle_in_flight(self, member: str, seen: int) -> None:
        self._counts()  # drop expired launches first: only live ones can have become pods
        self._settle(member, seen)

    def _settle(self, member: str, seen: int) -> None:
        pending = self._in_flight.get(member)
        for _ in range(min(max(seen, 0), len(pending or ()))):
            pending.popleft()
        self._recount(member)

    async def in_flight(self) -> dict[str, int]:
        return self._counts()

    def _counts(self) -> dict[str, int]:
        now = self.clock()
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, member = heapq.heappop(expiries)
            pending = self._in_flight.get(member)
            # Expiry times are appended in order (ttl is constant per config), so the
            # expired ones sit at the left.
            while pending and pending[0] <= now:
                pending.popleft()
            self._recount(member)
        return dict(self._live)

    def _recount(self, member: str) -> None:
        pending = self._in_flight.get(member)
        if pending:
            self._live[member] = len(pending)
        else:
            self._live.pop(member, None)
            self._in_flight.pop(member, None)

    async def learn_image(self, repo_key: str, member: str, ttl: float) -> None:
        self._images.setdefault(repo_key, {})[member] = self.clock() + ttl

    def holders(self, repo_key: str) -> frozenset[str]:
        """The members holding the image of `repo_key` (not a `Store` method: launch_state answers it)."""
        return self._holders(repo_key)

    def _holders(self, repo_key: str) -> frozenset[str]:
        entries = self._images.get(repo_key)
        if not entries:
            return frozenset()
        now = self.clock()
        for member in [m for m, expiry in entries.items() if expiry <= now]:
            del entries[member]
        if not entries:
            del self._images[repo_key]
        return frozenset(entries)

    async def cache_size(self) -> int:
        now = self.clock()
        return sum(1 for entries in self._images.values() for expiry in entries.values() if expiry > now)

    async def set_override(self, member: str, override: Override | None) -> None:
        if override is None:
            self._overrides.pop(member, None)
        else:
            self._overrides[member] = override

    async def overrides(self) -> dict[str, Override]:
        return dict(self._overrides)

    async def set_ejection(self, member: str, until: float) -> None:
        self._ejections[member] = until

    async def ejections(self) -> dict[str, float]:
        return dict(self._ejections)

    async def recent_launches(self, since: float) -> list[dict[str, Any]]:
        return [e for e in self._launches if e.get("timestamp", 0) >= since]

    def _count_minute(self, minute: int, launches: int = 1) -> None:
        counts = self._per_minute
        counts[minute] = counts.get(minute, 0) + launches
        if len(counts) > 2 * MINUTES_KEPT:
            newest = max(counts)
            for old in [m for m in counts if m <= newest - MINUTES_KEPT]:
                del counts[old]

    async def launches_per_minute(self, now: float, minutes: int = 60) -> list[int]:
        last = int(now // 60)
        return [self._per_minute.get(m, 0) for m in range(last - minutes + 1, last + 1)]

    def _hit(self, key: str, limit: int, window: float, now: float) -> tuple[bool, float]:
        start, count, _ = self._windows.get(key, (now, 0, window))
        if now - start >= window:
            start, count = now, 0
        count += 1
        self._windows[key] = (start, count, window)
        if len(self._windows) >= self._prune_windows_at:
            # Keys are often per client: forget ended windows instead of growing forever.
            self._windows = {k: w for k, w in self._windows.items() if now - w[0] < w[2]}
            self._prune_windows_at = max(10_000, 2 * len(self._windows))
        return count <= limit, max(0.0, start + window - now)

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        now = self.clock()
        current = self._leases.get(name)
        if current is None or current[0] == holder or current[1] <= now:
            self._leases[name] = (holder, now + ttl)
            return True
        return False

    async def release_lease(self, name: str, holder: str) -> None:
        current = self._leases.get(name)
        if current is not None and current[0] == holder:
            del self._leases[name]
