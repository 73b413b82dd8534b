"""Passive health: consecutive infrastructure failures eject a member for a while."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import replace

import pytest

from federation.config import OutlierSettings
from federation.members import Member
from federation.membership import Membership
from federation.stores.redis import RedisStore
from health.outlier import OutlierDetector
from tests.conftest import member_of, member_states
from tests.support.races import frozen_loop_clock, on_next_write, spin_until
from tests.support.streams import COOKIE, LAUNCH, mark_healthy, read_events, sticky, stream_config
from tests.support.clock import FakeClock
from tests.support.waiting import eventually

T0 = 1_800_000_000.0


def members(*names: str) -> Membership:
    return Membership([Member(name=n, url=f"http://{n}.example") for n in names])


@pytest.fixture
def detector(make_store):
    """`detector(names, **settings)` -> (detector, store, clock, observed events)."""
    made = []

    def make(names=("a", "b", "c", "d"), **settings):
        clock = FakeClock(T0)
        store = make_store(clock=clock)
        events: list[tuple[str, str]] = []
        current = OutlierSettings(**settings)
        d = OutlierDetector(store, members(*names), lambda: current, clock=clock,
                            observer=lambda member, event: events.append((member, event)))
        made.append(store)
        return d, store, clock, events

    yield make


async def test_consecutive_failures_eject_and_success_resets(detector):
    d, store, clock, events = detector(consecutive_failures=3, base_ejection_time=30)
    assert await d.failure("a", "stalled") is None
    assert await d.failure("a", "stalled") is None
    d.success("a")  # a ready launch: the two failures are no longer consecutive
    assert await d.failure("a", "stalled") is None
    assert await d.failure("a", "http_5xx") is None
    assert await d.failure("a", "member_full") == T0 + 30
    assert await store.ejections() == {"a": T0 + 30}
    assert events == [("a", "ejected")]
    assert d.consecutive_failures("a") == 0


async def test_ejection_time_grows_with_each_ejection_up_to_the_maximum(detector):
    d, store, clock, _ = detector(consecutive_failures=1, base_ejection_time=30, max_ejection_time=75)
    durations = []
    for _ in range(4):
        until = await d.failure("a", "stalled")
        durations.append(until - clock.now)
        clock.now = until + 1  # back in service, and failing again at once
    assert durations == [30, 60, 75, 75]


async def test_ejection_count_decays_while_the_member_stays_in_service(detector):
    d, store, clock, _ = detector(consecutive_failures=1, base_ejection_time=30, max_ejection_time=300)
    durations = []
    for _ in range(3):
        until = await d.failure("a", "stalled")
        durations.append(until - clock.now)
        clock.now = until + 1
    assert durations == [30, 60, 90]
    clock.now += 2 * 300  # two max_ejection_times in service: two ejections forgiven
    assert await d.failure("a", "stalled") - clock.now == 60


async def test_at_most_max_ejection_percent_of_members_are_ejected(detector):
    d, store, clock, events = detector(("a", "b", "c", "d"), consecutive_failures=1, max_ejection_percent=50)
    assert await d.failure("a", "unreachable") is not None
    assert await d.failure("b", "unreachable") is not None
    assert await d.failure("c", "unreachable") is None  # 3 of 4 would be 75 %
    assert set(await store.ejections()) == {"a", "b"}
    # c keeps its count and goes as soon as another member is back.
    clock.now += 31
    assert await d.failure("c", "unreachable") is not None


async def test_one_member_can_always_be_ejected_and_zero_percent_disables(detector):
    d, store, clock, _ = detector(("a", "b", "c"), consecutive_failures=1, max_ejection_percent=10)
    assert await d.failure("a", "unreachable") is not None  # none ejected: one may go (as in Envoy)
    assert await d.failure("b", "unreachable") is None
    d0, store0, _, _ = detector(("x", "y"), consecutive_failures=1, max_ejection_percent=0)
    assert await d0.failure("x", "unreachable") is None
    off, store_off, _, _ = detector(("y", "z"), consecutive_failures=1, enabled=False)
    assert await off.failure("z", "unreachable") is None
    assert not {"x", "z"} & (set(await store0.ejections()) | set(await store_off.ejections()))


async def test_sweep_reports_return_to_service_and_other_replicas_ejections(detector, caplog):
    d, store, clock, events = detector(consecutive_failures=1, base_ejection_time=30)
    await d.failure("a", "stalled")
    await store.set_ejection("b", T0 + 10)  # another replica ejected b
    await d.sweep()
    assert events == [("a", "ejected"), ("b", "seen")]
    clock.now = T0 + 11
    with caplog.at_level(logging.INFO, logger="binderfed.outlier"):
        await d.sweep()
    assert events[-1] == ("b", "returned")
    assert "member b returns to service" in caplog.text
    clock.now = T0 + 31
    await d.sweep()
    assert events[-1] == ("a", "returned")
    await d.sweep()
    assert len(events) == 4  # a return is reported once


# -- through the router ------------------------------------------------------------------------


async def test_failing_member_is_ejected_by_relayed_launches_and_returns(start_devhub, start_router, make_store,
                                                                        http, caplog):
    broken = await start_devhub("broken")
    broken.set_faults(build_refuse=True)
    good = await start_devhub("good")
    store = make_store()
    config = stream_config([member_of(broken), member_of(good)])
    outlier = OutlierSettings(consecutive_failures=2, base_ejection_time=1.0)
    config = replace(config, health=replace(config.health, outlier=outlier))
    router = await start_router(config, store, probe=False)
    await mark_healthy(store, "broken", "good")

    caplog.set_level(logging.INFO, logger="binderfed.outlier")
    for _ in range(2):
        async with http.get(router.url + LAUNCH, cookies={COOKIE: sticky(router, "broken")}) as response:
            events = await read_events(response)
        assert "Member broken failed (HTTP 500); trying member good" in events[0].data
        assert '"phase": "ready"' in events[-1].data  # each launch still reached ready on "good"
    assert (await member_states(http, router))["broken"] == "ejected"
    assert "member broken ejected for 1 s after 2 consecutive infrastructure failures (last: http_5xx)" in caplog.text
    # While ejected, even the sticky cookie does not send launches there.
    async with http.get(router.url + LAUNCH, cookies={COOKIE: sticky(router, "broken")}) as response:
        assert response.headers["X-Binder-Federation-Member"] == "good"
        await read_events(response)
    assert len(broken.build_requests) == 2
    async with http.get(router.url + "/metrics") as response:
        text = await response.text()
    assert 'federation_ejections_total{member="broken"} 1.0' in text
    assert 'federation_ejected{member="broken"} 1.0' in text

    async def returned():
        states = await member_states(http, router)
        async with http.get(router.url + "/metrics") as response:
            metrics = await response.text()
        return states["broken"] == "healthy" and 'federation_ejected{member="broken"} 0.0' in metrics
    await eventually(returned, timeout=5, what="the ejection to end")
    assert "member broken returns to service" in caplog.text


# -- stopping the sweep -----------------------------------------------------------------------
async def test_stop_ends_the_sweep_when_it_lands_as_a_redis_command_is_written(redis_url, monkeypatch):
    """The teardown hang of issue 14: a router stopped while its sweep's Redis command was
    being written never finished stopping (the cancel was swallowed inside redis-py, see
    tests/federation/test_redis_store.py) and the test ran into its timeout."""
    store = RedisStore(redis_url)
    await store.start()
    detector = OutlierDetector(store, members("a"), lambda: OutlierSettings(base_ejection_time=0.2))
    stopping: list[asyncio.Task[None]] = []
    try:
        await detector.start()
        await asyncio.sleep(0.1)                 # a few sweeps
        on_next_write(monkeypatch, lambda: stopping.append(asyncio.ensure_future(detector.stop())))
        await eventually(lambda: stopping, timeout=5, what="the next sweep's Redis command")
        async with asyncio.timeout(5):
            await stopping[0]
    finally:
        await store.close()


@pytest.mark.parametrize("deadline", ["socket_timeout", "op_timeout"])
async def test_stop_ends_the_sweep_when_it_falls_due_with_a_store_timeout(own_redis, deadline):
    """The guess of issue 14, tried on a loop: Redis frozen, the sweep waits in a store call,
    and the stop falls due together with that call's timeout. The sweep ends: the cancel
    does not become a timeout that the store's degradation would swallow."""
    store = RedisStore(own_redis.url, socket_timeout=0.3, connect_timeout=0.3, backoff_initial=60)
    await store.start()
    detector = OutlierDetector(store, members("a"), lambda: OutlierSettings(base_ejection_time=0.2))
    stopping: list[asyncio.Task[None]] = []
    assert own_redis.proc is not None
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        with frozen_loop_clock() as clock:
            started = clock.now
            await detector.start()
            await spin_until(lambda: False, 20)            # the first sweep waits for the frozen Redis
            when = started + getattr(store, deadline)
            asyncio.get_running_loop().call_at(when, lambda: stopping.append(asyncio.ensure_future(detector.stop())))
            clock.advance_to(when)
            assert await spin_until(lambda: bool(stopping) and stopping[0].done()), "stop() did not return"
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
        await store.close()
