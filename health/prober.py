"""Active health: probe every member's /health and /versions on a period.

Only the holder of the store's `prober` lease probes, so N router replicas do not
probe every member N times; the others read the statuses it writes.

Probes run concurrently, one task per member due; what they found is written at the
next tick (every half second at most), all in one batch: one read of the store's
statuses and one write (`Store.put_statuses`, one round trip on Redis) per tick, however
many members were probed, so probing a thousand members costs the store four calls a
second, not three per probe.

Every probe ends in a status, whatever the member answered: a document the member
API does not allow (numbers out of range, nested too deeply, not JSON) makes the
member `unhealthy` with a reason in the prober's own words, and even a surprise of
our own (a bug) writes an `unhealthy` status rather than leaving the last one in
place. The router reads a status older than `health.max_status_age` as `unknown`
(`federation.members.MemberStatus.aged`), so a prober that stopped cannot keep a
member in rotation on what it once said.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
import uuid
from dataclasses import replace
from typing import Any, Callable, Mapping

from federation.config import HealthSettings
from federation.member_health import ProbeResult, assess
from federation.members import Member, MemberState, MemberStatus
from federation.membership import Membership
from federation.stores.protocol import Store
from hub.client import HubClient, MemberError
from hub.models import MAX_COUNT, HealthReport, MemberResponseError
from hub.tasks import BackgroundService

log = logging.getLogger("binderfed.prober")

LEASE = "prober"


async def probe_member(client: HubClient, member: Member, settings: HealthSettings) -> ProbeResult:
    """GET /health (and /versions when healthy), retrying transport errors within one probe."""
    attempts = settings.retries + 1
    for attempt in range(attempts):
        started = time.monotonic()
        try:
            report = await client.health(member.url, timeout=settings.timeout)
            latency = time.monotonic() - started
            versions: Mapping[str, Any] = {}
            if report.ok and settings.versions_policy != "ignore":
                versions = await client.versions(member.url, timeout=settings.timeout)
            return ProbeResult(report=report, versions=versions, latency=latency)
        except MemberResponseError as exc:
            # The member answered, but with something that is not the member API. A retry
            # one second later will not change that.
            return ProbeResult(None, {}, error=f"bad answer: {exc}", latency=time.monotonic() - started,
                               detail=exc.detail)
        except MemberError as exc:
            if attempt + 1 == attempts:
                # The time it took to fail (a timeout, a refused connection) is a probe duration too.
                return ProbeResult(None, {}, error=f"unreachable: {exc}", unreachable=True, detail=exc.detail,
                                   latency=time.monotonic() - started)
            await asyncio.sleep(min(1.0, settings.period / 4))
        except Exception as exc:  # whatever happened (a RecursionError, a bug), the probe has a result
            log.warning("probe of %s failed unexpectedly: %s: %s", member.name, type(exc).__name__, exc,
                        exc_info=not isinstance(exc, RecursionError), extra={"member": member.name})
            return ProbeResult(None, {}, error="bad answer: the probe could not read it",
                               latency=time.monotonic() - started, detail=f"{type(exc).__name__}: {exc}"[:200])
    raise AssertionError("unreachable")  # pragma: no cover - the loop always returns


def reference_version(policy: str, members: tuple[Member, ...], statuses: Mapping[str, MemberStatus]) -> str | None:
    """The BinderHub version every member must run under the versions policy, if any."""
    if policy == "prime":
        for member in members:
            if member.prime and member.name in statuses:
                return statuses[member.name].versions.get("binderhub")
        return None
    if policy == "majority":
        counts = collections.Counter(
            s.versions.get("binderhub") for s in statuses.values() if s.versions.get("binderhub")
        )
        return counts.most_common(1)[0][0] if counts else None
    return None


ProbeObserver = Callable[[Member, MemberStatus, "MemberStatus | None"], None]
# (member name, its /health without a Pod quota check) -> the report completed from
# another source of capacity (the member agent's report), or None when there is none.
CapacityFiller = Callable[[str, HealthReport], "HealthReport | None"]


class Prober(BackgroundService):
    """Background service that keeps every member's status in the store fresh."""

    def __init__(
        self,
        store: Store,
        client: HubClient,
        membership: Membership,
        settings: HealthSettings,
        headroom: int,
        observer: ProbeObserver | None = None,
        rng: random.Random | None = None,
        lease_ttl: float | None = None,
        fill_capacity: CapacityFiller | None = None,
    ):
        super().__init__("prober")
        self.store = store
        self.fill_capacity = fill_capacity
        self.client = client
        self.membership = membership
        self.settings = settings
        self.headroom = headroom
        self.observer = observer
        self.rng = rng or random.Random()
        self.holder = uuid.uuid4().hex
        self.lease_ttl = lease_ttl if lease_ttl is not None else settings.prober_lease_ttl
        self.is_leader = False
        self._due: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._done: list[tuple[Member, tuple[ProbeResult, bool] | Exception]] = []  # probed, not yet written
        self._last: dict[str, MemberStatus] = {}
        self._lease_renewed = 0.0

    async def stop(self, *, release: bool = True) -> None:
        """Stop probing, running probes included.

        `release=False` leaves the lease to expire, as a crashed replica would."""
        await super().stop()
        if self.is_leader and release:
            try:
                await self.store.release_lease(LEASE, self.holder)
            except Exception:  # a store that is already gone cannot hold our lease either
                pass
        self.is_leader = False  # a stopped prober probes nothing, whoever the store says leads

    async def probe_once(self, member: Member) -> MemberStatus:
        """Probe `member` now and write its status (a batch of one); the status."""
        [status] = await self._write([(member, await self._result_of(member))])
        return status

    async def _result_of(self, member: Member) -> tuple[ProbeResult, bool]:
        """One probe's result, and whether its capacity came from the member agent's report."""
        result = await probe_member(self.client, member, self.settings)
        if self.fill_capacity is not None and result.report is not None and not result.report.has_quota_check:
            report = self.fill_capacity(member.name, result.report)
            if report is not None:
                return replace(result, report=report), True
        return result, False

    async def _write(self, done: list[tuple[Member, "tuple[ProbeResult, bool] | Exception"]]) -> list[MemberStatus]:
        """Assess the probes finished since the last write and write their statuses in one batch.

        One read of the store's statuses for the whole batch (the baseline of a member this
        replica has not probed since it took the lease, and the federation's reference
        version), and one write: a thousand members cost two store calls per tick, not
        three per probe."""
        stored = await self.store.statuses()
        known = {**stored, **self._last}   # what this replica wrote itself is the newest
        policy = self.settings.versions_policy
        reference = reference_version(policy, self.membership.members(), known)
        now = time.time()
        written: list[tuple[Member, MemberStatus, MemberStatus | None, str]] = []
        settle: dict[str, int] = {}
        for member, outcome in done:
            previous = self._last.get(member.name) or stored.get(member.name)
            if isinstance(outcome, Exception):
                status = MemberStatus(
                    name=member.name, state=MemberState.UNHEALTHY,
                    reason="probe failed: internal error (see the router's log)", checked_at=now,
                    consecutive_failures=min((previous.consecutive_failures if previous else 0) + 1, MAX_COUNT),
                    versions=previous.versions if previous else {},
                )
                detail = ""
            else:
                result, filled = outcome
                status = assess(member.name, result, previous, self.headroom,
                                reference if not member.prime or policy != "prime" else None, now)
                if filled:
                    status = replace(status, reason=f"{status.reason} (capacity from the member agent's report)")
                if previous is not None and result.report is not None and previous.checked_at:
                    # Pods the member's own count now shows were, until now, counted as in flight.
                    settle[member.name] = status.total_pods - previous.total_pods
                detail = result.detail
            self._due[member.name] = self._next_due(status)
            written.append((member, status, previous, detail))
        await self.store.put_statuses([status for _, status, _, _ in written], settle)
        for member, status, previous, detail in written:
            self._last[member.name] = status
            self._log_change(previous, status, detail)
            if self.observer is not None:
                self.observer(member, status, previous)
        return [status for _, status, _, _ in written]

    def _log_change(self, previous: MemberStatus | None, status: MemberStatus, detail: str = "") -> None:
        if previous is None or previous.state != status.state:
            level = logging.INFO if status.state in (MemberState.HEALTHY, MemberState.FULL) else logging.WARNING
            # What the member sent goes to the log, never into the public reason.
            log.log(level, "member %s is %s: %s%s", status.name, status.state.value, status.reason,
                    f" (the member sent {detail})" if detail else "",
                    extra={"member": status.name, "state": status.state.value, "reason": status.reason})

    def _next_due(self, status: MemberStatus) -> float:
        period = self.settings.period if status.state != MemberState.UNHEALTHY else self.settings.failed_period
        jitter = self.settings.jitter * (self.rng.random() - 0.5)
        return time.monotonic() + period * (1 + jitter)

    async def _probe(self, member: Member) -> None:
        """Probe one member; its result waits for the next tick's batch write."""
        try:
            result = await self._result_of(member)
            self._done.append((member, result))  # (not before the await: the tick swaps the list meanwhile)
        except Exception as exc:  # never let one member's surprise stop the prober, or freeze its status
            log.exception("probe of member %s failed unexpectedly: %s", member.name, exc)
            self._done.append((member, exc))
        finally:
            self._running.pop(member.name, None)

    async def run(self) -> None:
        # Several ticks per renewal interval (lease_ttl / 3), so the lease never lapses
        # between two renewals of a live leader.
        tick = min(0.5, self.settings.period / 4, self.lease_ttl / 6)
        while not self.stopping:
            try:
                await self._tick()
            except Exception as exc:
                log.warning("prober tick failed: %s", exc)
            if not await self.pause(tick):
                return

    async def _tick(self) -> None:
        now = time.monotonic()
        if now - self._lease_renewed >= self.lease_ttl / 3 or not self.is_leader:
            leader = await self.store.acquire_lease(LEASE, self.holder, self.lease_ttl)
            self._lease_renewed = now
            if leader != self.is_leader:
                log.info("prober %s leadership", "took" if leader else "lost",
                         extra={"holder": self.holder, "leader": leader})
                if leader:
                    self._due.clear()  # probe everything now: statuses may be a lease period old
                    # What this replica saw when it last led is stale: another leader has
                    # settled in-flight launches since, so the store's statuses are the baseline.
                    self._last.clear()
                else:
                    # Another replica leads now: a probe still running here would write a
                    # status (and settle in-flight launches) behind the new leader's back.
                    for task in list(self._running.values()):
                        task.cancel()
            self.is_leader = leader
        if not self.is_leader:
            self._done.clear()  # results of probes from before the lease was lost are not ours to write
            return
        members = self.membership.members()
        current = {m.name for m in members}
        for name in list(self._due):
            if name not in current:
                del self._due[name]
                self._last.pop(name, None)
        waiting = {m.name for m, _ in self._done}  # probed, written below, due again later
        for member in members:
            if member.name in self._running or member.name in waiting:
                continue
            if self._due.get(member.name, 0.0) <= now:
                self._running[member.name] = self.spawn(self._probe(member), name=f"probe-{member.name}")
        done, self._done = [(m, outcome) for m, outcome in self._done if m.name in current], []
        if done:
            try:
                await self._write(done)
            except Exception as exc:  # the store failed: these statuses age out to unknown, probes go on
                log.warning("cannot record the probes of %d members: %s", len(done), exc)
                for member, _ in done:
                    self._due[member.name] = time.monotonic() + self.settings.failed_period
