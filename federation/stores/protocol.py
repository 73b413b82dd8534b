"""The store protocol: what the router keeps while the federation runs, one interface.

Implementations: `federation.stores.memory.MemoryStore` (one process) and
`federation.stores.redis.RedisStore` (replicas sharing Redis); `federation.stores.factory.open_store`
picks one from a `store.url`.

The store holds what changes while the federation runs and must be shared by all
router replicas: member status, in-flight launches, the image-cache map, admin
overrides, passive-health ejections, the launch event log, rate-limit counters
and the prober's leader lease. Membership itself comes from `federation.sources`.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..members import MemberStatus, Override

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

        One atomic step. Each rate is a fixed window; counting stops at the first
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
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew lease `name` for `holder`; False while someone else holds it."""

    @abc.abstractmethod
    async def release_lease(self, name: str, holder: str) -> None: ...
