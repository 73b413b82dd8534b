"""BackgroundService and Backoff: the one way every background loop starts, waits, retries and stops."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from hub.tasks import Backoff, BackgroundService


async def started_a_step(event: asyncio.Event) -> None:
    async with asyncio.timeout(5):
        await event.wait()


async def stopped_within(service: BackgroundService, seconds: float = 5.0) -> bool:
    """Run `service.stop()` in a task of its own; whether it returned within `seconds`."""
    stopping = asyncio.ensure_future(service.stop())
    done, _ = await asyncio.wait({stopping}, timeout=seconds)
    return bool(done)


class Ticker(BackgroundService):
    """Counts its steps; a step waits in `work` so a test can stop it in the middle of one."""

    def __init__(self, period: float = 0.0, work: float = 0.0) -> None:
        super().__init__("ticker")
        self.period = period
        self.work = work
        self.steps = 0
        self.finished_steps = 0
        self.in_step = asyncio.Event()

    async def run(self) -> None:
        while await self.pause(self.period):
            self.steps += 1
            self.in_step.set()
            await asyncio.sleep(self.work)
            self.finished_steps += 1


async def test_stop_ends_a_long_pause_at_once_and_no_step_follows():
    ticker = Ticker(period=3600)
    await ticker.start()
    await asyncio.sleep(0.05)
    assert ticker.is_running and ticker.steps == 0
    assert await stopped_within(ticker, 1.0)
    assert not ticker.is_running and ticker.steps == 0 and ticker.stopping


async def test_stop_cuts_a_step_short():
    ticker = Ticker(work=3600)
    await ticker.start()
    await started_a_step(ticker.in_step)
    assert await stopped_within(ticker, 1.0)
    assert ticker.steps == 1 and ticker.finished_steps == 0


class Swallowing(BackgroundService):
    """A step that loses the cancel, as a library call can (Python 3.11's asyncio.wait_for)."""

    def __init__(self) -> None:
        super().__init__("swallowing")
        self.steps = 0
        self.lost = 0
        self.in_step = asyncio.Event()

    async def run(self) -> None:
        while await self.pause(0):
            self.steps += 1
            try:
                self.in_step.set()
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                self.lost += 1  # gone: the step carries on as if nothing happened


async def test_a_loop_whose_step_loses_the_cancel_still_stops_with_one_cancel():
    service = Swallowing()
    await service.start()
    await started_a_step(service.in_step)
    assert await stopped_within(service, 5.0)
    assert service.lost == 1 and service.steps == 1   # no re-cancelling, and no further step


async def test_wake_ends_the_pause_early_and_a_wake_between_pauses_is_kept():
    ticker = Ticker(period=3600)
    await ticker.start()
    await asyncio.sleep(0.02)
    ticker.wake()
    await started_a_step(ticker.in_step)
    assert ticker.steps == 1
    await ticker.stop()

    woken = Ticker(period=3600)
    woken.wake()                 # before the first pause: it returns at once
    await woken.start()
    await started_a_step(woken.in_step)
    await woken.stop()


async def test_a_stopped_service_starts_again():
    ticker = Ticker(period=0.01)
    await ticker.start()
    await asyncio.sleep(0.05)
    await ticker.stop()
    before = ticker.steps
    await ticker.start()
    assert ticker.is_running and not ticker.stopping
    await asyncio.sleep(0.05)
    assert ticker.steps > before
    await ticker.stop()


async def test_stop_cancels_and_waits_for_spawned_tasks():
    ticker = Ticker(period=3600)
    await ticker.start()
    ended = []

    async def child() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)   # cleanup that takes a moment: stop() waits for it
            ended.append(True)

    task = ticker.spawn(child(), name="child")
    await asyncio.sleep(0.01)
    await ticker.stop()
    assert task.cancelled() and ended == [True]


async def test_errors_are_logged_not_lost(caplog):
    class Crashing(BackgroundService):
        async def run(self) -> None:
            self.spawn(self.fail(), name="failing-child")
            await asyncio.sleep(0.01)
            raise RuntimeError("a bug in the loop")

        async def fail(self) -> None:
            raise ValueError("a bug in a child")

    service = Crashing("crashing")
    with caplog.at_level(logging.ERROR, logger="binderfed.tasks"):
        await service.start()
        for _ in range(100):
            if not service.is_running:
                break
            await asyncio.sleep(0.01)
        await service.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert "background service crashing stopped by an unexpected error" in messages
    assert "crashing: task failing-child failed" in messages


async def test_a_cancelled_stop_passes_the_cancel_on():
    """A shutdown that gives up waiting (its own deadline) is not held by stop()."""
    ticker = Swallowing()
    await ticker.start()
    await started_a_step(ticker.in_step)
    stopping = asyncio.ensure_future(ticker.stop())
    await asyncio.sleep(0)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert await stopped_within(ticker, 5.0)


def test_backoff_doubles_up_to_the_maximum_and_resets():
    backoff = Backoff(0.5, 4.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.attempts == 6
    backoff.reset()
    assert backoff.next() == 0.5


def test_backoff_jitter_only_shortens_a_delay_by_at_most_its_fraction():
    backoff = Backoff(1.0, 60.0, jitter=0.5, rng=random.Random(7))
    for ceiling in [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]:
        assert ceiling / 2 <= backoff.next() <= ceiling
    with pytest.raises(ValueError):
        Backoff(1.0, 2.0, jitter=1.5)
