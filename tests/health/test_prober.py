"""Active health checks against dev members over real sockets."""

from __future__ import annotations

import collections

import aiohttp
import pytest

from federation.config import HealthSettings
from federation.members import Member, MemberState, MemberStatus
from federation.membership import Membership
from federation.stores.memory import MemoryStore
from federation.stores.protocol import Store
from health.prober import LEASE, ProbeResult, Prober, assess, probe_member, reference_version
from hub.client import HubClient
from hub.models import HealthReport
from tests.support.waiting import eventually

SETTINGS = HealthSettings(period=0.1, failed_period=0.2, jitter=0.0, timeout=0.5, retries=0)


@pytest.fixture
async def client():
    async with aiohttp.ClientSession() as session:
        yield HubClient(session)


@pytest.fixture
async def store(make_store) -> Store:
    """The store probers share: once in memory, once in the session redis-server."""
    store = make_store()
    await store.start()
    yield store
    await store.close()


async def probe(client, hub, settings=SETTINGS, headroom=0, previous=None, reference=None) -> MemberStatus:
    member = Member(name=hub.settings.name, url=hub.url)
    result = await probe_member(client, member, settings)
    return assess(member.name, result, previous, headroom, reference, now=1.0)


async def test_healthy_member_with_quota(start_devhub, client):
    hub = await start_devhub("a", quota=10)
    status = await probe(client, hub)
    assert status.state == MemberState.HEALTHY
    assert (status.quota, status.total_pods, status.has_quota) == (10, 0, True)
    assert status.latency is not None and status.reason == "ok: 0 of 10 pods"


async def test_failing_hard_check_is_read_from_the_503_body(start_devhub, client):
    hub = await start_devhub("a", quota=10)
    hub.set_faults(unhealthy=True)
    status = await probe(client, hub)
    assert status.state == MemberState.UNHEALTHY
    assert status.reason == "failed checks: JupyterHub API"
    assert status.quota == 10  # the body was read despite the 503


async def test_member_without_pod_quota_check_has_unknown_capacity(start_devhub, client):
    hub = await start_devhub("a", report_quota=False)
    status = await probe(client, hub)
    assert status.state == MemberState.HEALTHY and not status.has_quota and status.quota is None
    assert "capacity unknown" in status.reason


async def test_member_within_headroom_is_full_not_sick(start_devhub, client):
    hub = await start_devhub("a", quota=3)
    status = await probe(client, hub, headroom=3)
    assert status.state == MemberState.FULL
    assert status.reason == "full: 0 of 3 pods (headroom 3)"


async def test_garbage_and_hanging_members_are_unhealthy_with_a_reason(start_devhub, client):
    hub = await start_devhub("a", quota=3)
    hub.set_faults(garbage_health=True)
    status = await probe(client, hub)
    assert status.state == MemberState.UNHEALTHY and status.reason.startswith("bad answer")
    assert status.reachable  # it answered: panic may still send launches there
    hub.set_faults(garbage_health=False, health_delay=30)
    status = await probe(client, hub)
    assert status.state == MemberState.UNHEALTHY and status.reason.startswith("unreachable")
    assert "timeout" in status.reason or "timed out" in status.reason
    assert not status.reachable  # no answer at all: panic passes it over


def test_assess_counts_consecutive_failures_and_resets_on_success():
    failed = ProbeResult(None, {}, error="unreachable: refused", unreachable=True)
    first = assess("a", failed, None, 0, None, now=1)
    second = assess("a", failed, first, 0, None, now=2)
    assert (first.consecutive_failures, second.consecutive_failures) == (1, 2)
    ok = ProbeResult(HealthReport(ok=True, http_status=200), {})
    assert assess("a", ok, second, 0, None, now=3).consecutive_failures == 0


def test_versions_policies():
    members = (Member("p", "http://p", prime=True), Member("a", "http://a"), Member("b", "http://b"))
    statuses = {name: MemberStatus(name, versions={"binderhub": v}) for name, v in
                [("p", "1.0"), ("a", "2.0"), ("b", "2.0")]}
    assert reference_version("ignore", members, statuses) is None
    assert reference_version("prime", members, statuses) == "1.0"
    assert reference_version("majority", members, statuses) == "2.0"
    report = HealthReport(ok=True, http_status=200)
    status = assess("a", ProbeResult(report, {"binderhub": "2.0"}), None, 0, "1.0", now=1)
    assert status.state == MemberState.UNHEALTHY and "federation expects 1.0" in status.reason


async def test_prober_writes_status_and_reprobes_a_recovered_member(start_devhub, client, store):
    hub = await start_devhub("a", quota=5)
    prober = Prober(store, client, Membership([Member("a", hub.url)]), SETTINGS, headroom=0)
    await prober.start()
    try:
        await eventually(lambda: prober.is_leader, what="leadership")

        async def state():
            status = (await store.statuses()).get("a")
            return status.state if status else None

        await eventually(lambda: _is(state(), MemberState.HEALTHY), what="healthy")
        hub.set_faults(unhealthy=True)
        await eventually(lambda: _is(state(), MemberState.UNHEALTHY), what="unhealthy")
        hub.set_faults(unhealthy=False)
        await eventually(lambda: _is(state(), MemberState.HEALTHY), timeout=2, what="back to healthy")
    finally:
        await prober.stop()


async def test_only_the_lease_holder_probes(start_devhub, client, store):
    hub = await start_devhub("a", quota=5)
    membership = Membership([Member("a", hub.url)])
    first = Prober(store, client, membership, SETTINGS, headroom=0)
    second = Prober(store, client, membership, SETTINGS, headroom=0)
    await first.start()
    await eventually(lambda: first.is_leader, what="first prober leads")
    await second.start()
    try:
        await eventually(lambda: second._lease_renewed > 0, what="second prober tried the lease")
        assert not second.is_leader
    finally:
        await first.stop()
    try:
        # the lease is released on stop, so the second takes over at its next tick
        await eventually(lambda: second.is_leader, timeout=2, what="second takes over")
    finally:
        await second.stop()


async def _is(awaitable, expected):
    return (await awaitable) == expected


async def test_a_crashed_leader_keeps_the_lease_until_it_expires(start_devhub, client, store):
    hub = await start_devhub("a", quota=5)
    membership = Membership([Member("a", hub.url)])
    first = Prober(store, client, membership, SETTINGS, headroom=0, lease_ttl=0.6)
    second = Prober(store, client, membership, SETTINGS, headroom=0, lease_ttl=0.6)
    await first.start()
    await eventually(lambda: first.is_leader, what="first prober leads")
    await second.start()
    try:
        await first.stop(release=False)  # as if the replica died: nobody releases the lease
        assert not await store.acquire_lease(LEASE, "someone else", 0.6)
        await eventually(lambda: second.is_leader, timeout=0.6 + 2, what="second takes over once the lease expires")
    finally:
        await second.stop()


async def test_a_leader_that_loses_the_lease_stops_probing(start_devhub, client, store):
    hub = await start_devhub("a", quota=5)
    probes: list[float] = []
    prober = Prober(store, client, Membership([Member("a", hub.url)]), SETTINGS, headroom=0, lease_ttl=0.6,
                    observer=lambda member, status, previous: probes.append(status.checked_at))
    await prober.start()
    try:
        await eventually(lambda: len(probes) >= 2, what="the leader probes")
        # Another replica holds the lease now (as after a Redis restart where it renewed first).
        await store.release_lease(LEASE, prober.holder)
        assert await store.acquire_lease(LEASE, "other replica", 60)
        await eventually(lambda: not prober.is_leader, timeout=2, what="the prober notices it lost the lease")
        seen, lost_at = len(probes), prober._lease_renewed
        # Several periods' worth of ticks later, it has tried the lease again and again but probed nothing.
        await eventually(lambda: prober._lease_renewed >= lost_at + 3 * SETTINGS.period, what="more ticks")
        assert len(probes) == seen and not prober.is_leader
    finally:
        await prober.stop()


class CountingStore(MemoryStore):
    """A MemoryStore that counts the prober's reads and writes."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()
        self.batches: list[int] = []

    async def statuses(self):
        self.calls["statuses"] += 1
        return await super().statuses()

    async def put_status(self, status):
        self.calls["put_status"] += 1
        await super().put_status(status)

    async def settle_in_flight(self, member, seen):
        self.calls["settle_in_flight"] += 1
        await super().settle_in_flight(member, seen)

    async def put_statuses(self, statuses, settled):
        self.batches.append(len(statuses))
        await super().put_statuses(statuses, settled)


async def test_a_probe_tick_reads_statuses_once_and_writes_them_in_one_batch(start_devhub, client):
    """Probing many members costs the store one read and one write per tick, not calls per member."""
    hub = await start_devhub("a", quota=50)
    members = [Member(f"m{i}", hub.url) for i in range(30)]
    store = CountingStore()
    settings = HealthSettings(period=60, failed_period=60, jitter=0.0, timeout=2, retries=0)
    prober = Prober(store, client, Membership(members), settings, headroom=0)
    await prober.start()
    try:
        async def all_healthy():
            statuses = await MemoryStore.statuses(store)
            return len(statuses) == 30 and all(s.state == MemberState.HEALTHY for s in statuses.values())

        await eventually(all_healthy, what="30 members probed healthy")
        assert sum(store.batches) == 30 and max(store.batches) > 1, store.batches
        assert store.calls["statuses"] == len(store.batches)   # one read per written batch
        assert store.calls["put_status"] == store.calls["settle_in_flight"] == 0
    finally:
        await prober.stop()


async def test_a_member_that_starts_hanging_is_taken_out_by_the_prober(start_devhub, client, store):
    """A probe that outlasts several ticks (it waits for its timeout) still gets its status written."""
    hub = await start_devhub("a", quota=5)
    settings = HealthSettings(period=0.1, failed_period=0.2, jitter=0.0, timeout=0.5, retries=0)
    prober = Prober(store, client, Membership([Member("a", hub.url)]), settings, headroom=0)
    await prober.start()
    try:
        async def state():
            status = (await store.statuses()).get("a")
            return status.state if status else None

        await eventually(lambda: _is(state(), MemberState.HEALTHY), what="healthy")
        hub.set_faults(health_delay=60)
        await eventually(lambda: _is(state(), MemberState.UNHEALTHY), timeout=5, what="unhealthy after the timeout")
        assert "timed out" in (await store.statuses())["a"].reason
    finally:
        await prober.stop()
