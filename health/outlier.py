"""Passive health: eject members whose launches keep failing, in the manner of Envoy.

The stream relay reports the outcome of every launch attempt it relays:
`failure(member, cause)` for an infrastructure failure (see `hub.failures`),
`success(member)` for a launch that reached `ready`. A member with
`consecutive_failures` infrastructure failures in a row is ejected: placement
passes it over (state `ejected`) until the ejection ends.

- The n-th ejection of a member lasts `base_ejection_time × n`, capped at
  `max_ejection_time` (Envoy's outlier detection). A member that stays in service for
  `max_ejection_time` after an ejection has its count lowered by one, so a member
  that failed once last week starts again from the base time.
- Never more than `max_ejection_percent` of the members are ejected at once; one
  member can always be ejected when none is (as Envoy does). A member over the limit
  keeps its failure count and is ejected as soon as the limit allows.
- Ejections are written to the store (`set_ejection(name, until)`), so every router
  replica passes the member over; counts and ejection numbers are this replica's own.
- `start()`/`stop()` (a `hub.tasks.BackgroundService`) run a sweep that notices
  ejections ending (logged, and the observer told) and ejections made by other
  replicas (for the metrics gauge).

Settings are read through a callable on every use because the router's config can be
reloaded while it runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Callable

from federation.config import OutlierSettings
from federation.membership import Membership
from federation.stores.protocol import Store
from hub.tasks import BackgroundService

log = logging.getLogger("binderfed.outlier")

# (member, event) with event "ejected" (this replica ejected it), "seen" (ejected by
# another replica, noticed by the sweep) or "returned" (its ejection ended).
EjectionObserver = Callable[[str, str], None]


class OutlierDetector(BackgroundService):
    def __init__(
        self,
        store: Store,
        membership: Membership,
        settings: Callable[[], OutlierSettings],
        *,
        observer: EjectionObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("outlier-sweep")
        self.store = store
        self.membership = membership
        self.settings = settings
        self.observer = observer
        self.clock = clock
        self._failures: dict[str, int] = {}       # consecutive infrastructure failures
        self._times: dict[str, int] = {}          # ejection count (the multiplier)
        self._last_until: dict[str, float] = {}   # end of the member's latest ejection by us
        self._ejected: dict[str, float] = {}      # ejections the sweep knows are running
        self._held_back: set[str] = set()         # over max_ejection_percent, warned once
        self._lock = asyncio.Lock()

    # -- outcomes ------------------------------------------------------------------

    def consecutive_failures(self, member: str) -> int:
        return self._failures.get(member, 0)

    def success(self, member: str) -> None:
        """A launch on `member` reached ready: its failures are no longer consecutive."""
        self._failures.pop(member, None)
        self._held_back.discard(member)

    async def failure(self, member: str, cause: str) -> float | None:
        """Count one infrastructure failure; eject when due. Returns the ejection's end, if any."""
        settings = self.settings()
        if not settings.enabled:
            return None
        count = self._failures[member] = self._failures.get(member, 0) + 1
        if count < settings.consecutive_failures:
            return None
        # One ejection decision at a time, so two failing launches cannot both squeeze
        # under max_ejection_percent.
        async with self._lock:
            return await self._eject(member, cause, count, settings)

    async def _eject(self, member: str, cause: str, count: int, settings: OutlierSettings) -> float | None:
        now = self.clock()
        ejections = await self.store.ejections()
        if ejections.get(member, 0.0) > now:
            self._failures[member] = 0  # already out (another replica, or a concurrent launch)
            return None
        names = {m.name for m in self.membership.members()}
        ejected = sum(1 for name, until in ejections.items() if until > now and name in names and name != member)
        if settings.max_ejection_percent <= 0 or (
            ejected > 0 and (ejected + 1) * 100 > settings.max_ejection_percent * len(names)
        ):
            if member not in self._held_back:
                self._held_back.add(member)
                log.warning(
                    "member %s not ejected after %d consecutive infrastructure failures (last: %s): "
                    "%d of %d members are ejected already (max_ejection_percent %g)",
                    member, count, cause, ejected, len(names), settings.max_ejection_percent,
                    extra={"member": member, "cause": cause},
                )
            return None
        times = self._decayed_times(member, now, settings) + 1
        duration = min(settings.base_ejection_time * times, max(settings.max_ejection_time, settings.base_ejection_time))
        until = now + duration
        await self.store.set_ejection(member, until)
        self._times[member] = times
        self._last_until[member] = until
        self._ejected[member] = until
        self._failures[member] = 0
        self._held_back.discard(member)
        log.warning(
            "member %s ejected for %g s after %d consecutive infrastructure failures (last: %s); ejection number %d",
            member, duration, count, cause, times,
            extra={"member": member, "cause": cause, "ejected_until": until, "ejections": times},
        )
        if self.observer is not None:
            self.observer(member, "ejected")
        return until

    def _decayed_times(self, member: str, now: float, settings: OutlierSettings) -> int:
        times = self._times.get(member, 0)
        last = self._last_until.get(member)
        if times and last is not None and now > last:
            times = max(0, times - math.floor((now - last) / max(settings.max_ejection_time, 1e-9)))
        return times

    # -- the sweep -------------------------------------------------------------------

    async def sweep(self) -> None:
        """Notice ejections that ended (log them) and ejections made by other replicas."""
        now = self.clock()
        ejections = await self.store.ejections()
        for member, until in ejections.items():
            if until > now and member not in self._ejected:
                self._ejected[member] = until
                if self.observer is not None:
                    self.observer(member, "seen")
            elif until > now:
                self._ejected[member] = until
        for member, until in list(self._ejected.items()):
            current = ejections.get(member, until)
            if current <= now:
                del self._ejected[member]
                log.info("member %s returns to service: its passive-health ejection ended", member,
                         extra={"member": member})
                if self.observer is not None:
                    self.observer(member, "returned")

    def sweep_interval(self) -> float:
        return max(0.05, min(1.0, self.settings().base_ejection_time / 4))

    async def run(self) -> None:
        while not self.stopping:
            try:
                await self.sweep()
            except Exception as exc:  # a store hiccup must not end passive health
                log.warning("outlier sweep failed: %s", exc)
            if not await self.pause(self.sweep_interval()):
                return
