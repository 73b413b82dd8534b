"""Router state: one interface, an embedded in-memory default and (later) Redis.

The store holds what changes while the federation runs and must be shared by all
router replicas: member status, in-flight launches, the image-cache map, admin
overrides, passive-health ejections, the launch event log, rate-limit counters
and the prober's leader lease. Membership itself comes from `federation.sources`.
"""

from __future__ import annotations

import abc
import collections
import heapq
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .members import MemberStatus, Override

Clock = Callable[[], float]

MINUTES_KEPT = 120  # per-minute launch counts are kept two hours


def event_minute(event: Mapping[str, Any], now: float) -> int:
    """The clock minute a launch event counts in: its timestamp's, else `now`'s."""
    ts = event.get("timestamp")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts == ts and abs(ts) < 1e12:
        return int(ts // 60)
    return int(now // 60)


@dataclass(frozen=True)
class LaunchState:
    """Everything the hot path of one launch reads from the store, in one call."""

    statuses: Mapping[str, MemberStatus]
    in_flight: Mapping[str, int]
    overrides: Mapping[str, Override]
    ejections: Mapping[str, float]
    holders: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class RateCheck:
    """One fixed-window rate limit a launch is counted against (see `Store.limit_launch`)."""

    key: str
    limit: int
    window: float


@dataclass(frozen=True)
class RecordResult:
    """What `Store.record_launch` did: counted the launch, or which limit refused it.

    True in a boolean context exactly when the launch was counted.
    """

    counted: bool
    refused: str | None = None   # None, MEMBER_FULL (the member's room) or REPO_CAP (the repository's cap)
    repo_in_flight: int = 0      # the repository's launches in flight when REPO_CAP refused

    def __bool__(self) -> bool:
        return self.counted


MEMBER_FULL = "member"
REPO_CAP = "repo_cap"
COUNTED = RecordResult(True)


@dataclass(frozen=True)
class LimitState:
    """What `Store.limit_launch` found."""

    refused: int | None     # index (in the `rates` given) of the first limit the launch went over
    retry_after: float      # seconds until that limit's window resets; 0 when none was exceeded
    repo_in_flight: int     # launches of the repository in flight (recorded with a repo_key, not expired)


class Store(abc.ABC):
    """Shared router state. Every method is a coroutine so Redis can implement it."""

    degraded: bool = False  # True while a shared store is unreachable and a local fallback serves
    errors: int = 0         # calls that failed other than by an outage (a bug), answered locally
    on_error: Callable[[], None] | None = None  # called for each of those (the router counts them)
    # Seconds by which what `launch_state(repo_key)` answers may lag behind writes made
    # through other stores (other replicas); a store's own writes are seen at once.
    freshness_bound: float = 0.0

    def __init__(self, clock: Clock = time.time):
        self.clock = clock

    async def start(self) -> None:
        """Connect; called once by the app before serving."""

    async def close(self) -> None:
        """Disconnect; called once on shutdown."""

    # -- hot path of a launch --------------------------------------------------------
    @abc.abstractmethod
    async def launch_state(self, repo_key: str | None) -> LaunchState:
        """Statuses, in-flight counts, overrides, ejections and the image holders of one repository."""

    @abc.abstractmethod
    async def record_launch(self, member: str, ttl: float, event: Mapping[str, Any] | None = None, *,
                            limit: int | None = None, repo_key: str | None = None, repo_ttl: float = 0.0,
                            repo_cap: int | None = None) -> RecordResult:
        """Count one launch in flight on `member` for `ttl` seconds and append `event` to the launch log.

        With a `limit`, only if fewer than `limit` launches of `member` are in flight; with a
        `repo_cap` (and a `repo_key`), only if fewer than `repo_cap` launches of that
        repository are in flight. Both are checked and the launch counted in one atomic
        step: replicas (or concurrent requests of one replica) that all read the same
        counts before any of them recorded cannot overfill a member, or take a repository
        past its cap, together. The answer says whether the launch was counted, and if
        not, which limit refused it (the repository's cap is checked first: placing the
        launch elsewhere cannot help it). With a `repo_key`, a counted launch is also in
        flight for that repository for `repo_ttl` seconds, in the same step.
        """

    @abc.abstractmethod
    async def limit_launch(self, rates: Sequence[RateCheck], repo_key: str | None) -> LimitState:
        """Count one launch against each of `rates` in order and read the in-flight launches of `repo_key`.

        One atomic step. Each rate is a fixed window (as `hit`); counting stops at the first
        rate the launch goes over (that one is counted, the later ones are not), whose index
        and reset time come back in the answer.
        """

    # -- member status (written by the prober) -----------------------------------------
    @abc.abstractmethod
    async def put_status(self, status: MemberStatus) -> None: ...

    @abc.abstractmethod
    async def put_statuses(self, statuses: Sequence[MemberStatus], settled: Mapping[str, int]) -> None:
        """One probe tick's writes in one step: `put_status` of each, `settle_in_flight` of each (member, seen)."""

    @abc.abstractmethod
    async def statuses(self) -> dict[str, MemberStatus]: ...

    @abc.abstractmethod
    async def settle_in_flight(self, member: str, seen: int) -> None:
        """A probe shows `seen` more pods than the previous one: forget that many oldest in-flight launches."""

    @abc.abstractmethod
    async def in_flight(self) -> dict[str, int]: ...

    # -- image-cache map ---------------------------------------------------------------
    @abc.abstractmethod
    async def learn_image(self, repo_key: str, member: str, ttl: float) -> None:
        """Remember that `member` holds the image of `repo_key` for `ttl` seconds (refreshed when seen again)."""

    @abc.abstractmethod
    async def image_holders(self, repo_key: str) -> frozenset[str]: ...

    @abc.abstractmethod
    async def cache_size(self) -> int:
        """Number of live (repository, member) entries in the image-cache map."""

    # -- operator overrides and passive health -----------------------------------------
    @abc.abstractmethod
    async def set_override(self, member: str, override: Override | None) -> None: ...

    @abc.abstractmethod
    async def overrides(self) -> dict[str, Override]: ...

    @abc.abstractmethod
    async def set_ejection(self, member: str, until: float) -> None: ...

    @abc.abstractmethod
    async def ejections(self) -> dict[str, float]: ...

    # -- launch event log --------------------------------------------------------------
    @abc.abstractmethod
    async def recent_launches(self, since: float) -> list[dict[str, Any]]:
        """Launch events with a timestamp >= since, oldest first."""

    @abc.abstractmethod
    async def launches_per_minute(self, now: float, minutes: int = 60) -> list[int]:
        """Launches recorded (with an event) in each of the last `minutes` clock minutes, oldest first.

        Minute m is [60 m, 60 (m + 1)) in unix time, by the event's `timestamp`; the last one
        is the minute `now` falls in. Counted by `record_launch` as it goes, so reading them
        costs the same however many launches there were (the status page reads them).
        """

    # -- rate limits and leadership ----------------------------------------------------
    @abc.abstractmethod
    async def hit(self, key: str, limit: int, window: float) -> tuple[bool, float]:
        """Count one hit on `key` in a fixed window; (allowed, seconds until the window resets)."""

    @abc.abstractmethod
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew lease `name` for `holder`; False while someone else holds it."""

    @abc.abstractmethod
    async def release_lease(self, name: str, holder: str) -> None: ...


class MemoryStore(Store):
    """The embedded default: one router process, nothing to install."""

    def __init__(self, clock: Clock = time.time, log_length: int = 100_000):
        super().__init__(clock)
        self._statuses: dict[str, MemberStatus] = {}
        self._in_flight: dict[str, collections.deque[float]] = {}   # member -> expiry times, oldest first
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
                return RecordResult(False, MEMBER_FULL)
        expiries.append(now + ttl)
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

    async def in_flight(self) -> dict[str, int]:
        return self._counts()

    def _counts(self) -> dict[str, int]:
        now = self.clock()
        counts = {}
        idle = []
        for member, expiries in self._in_flight.items():
            # Expiry times are appended in order (ttl is constant per config), so the
            # expired ones sit at the left.
            while expiries and expiries[0] <= now:
                expiries.popleft()
            if expiries:
                counts[member] = len(expiries)
            else:
                idle.append(member)
        for member in idle:  # so this loop covers members with launches in flight, not every member
            del self._in_flight[member]
        return counts

    async def learn_image(self, repo_key: str, member: str, ttl: float) -> None:
        self._images.setdefault(repo_key, {})[member] = self.clock() + ttl

    async def image_holders(self, repo_key: str) -> frozenset[str]:
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

    async def hit(self, key: str, limit: int, window: float) -> tuple[bool, float]:
        return self._hit(key, limit, window, self.clock())

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


def open_store(url: str, clock: Clock = time.time) -> Store:
    """The store a `store.url` names."""
    if url.startswith("memory://"):
        return MemoryStore(clock)
    if url.startswith(("redis://", "rediss://", "redis+sentinel://")):
        from .redis_store import RedisStore  # imported lazily: the embedded default needs no Redis

        return RedisStore(url, clock=clock)
    raise ValueError(f"unsupported store URL {url!r}: expected memory://, redis://, rediss:// or redis+sentinel://")


def __getattr__(name: str) -> Any:
    # `from federation.store import RedisStore` without importing redis for the embedded default.
    if name == "RedisStore":
        from .redis_store import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
