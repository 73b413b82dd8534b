"""Background services: loops that run between `start()` and `stop()`, and their backoff.

Here, at the bottom of the dependency arrow, so every loop shares one implementation:
the member agent and its pod watchers (hub), the config file and Consul sources and the
Redis store's reconnection (federation), the prober, the outlier sweep and the report
reader (health), the relay's stream sweep (router).

Why stopping does not rest on cancellation alone
------------------------------------------------
`stop()` sets a stop flag, ends a `pause()` at once, and cancels the task only while it
is inside a step, to cut short the I/O that step waits for. A loop checks the flag
between steps (`while await self.pause(...)`), so it ends when its current step is over
even if that step lost the cancel; every step's I/O has its own timeout, so that is soon.

Cancels did get lost, which made test teardowns hang until the test timeout (issue 14):
Python 3.11's `asyncio.wait_for` returns the awaited result instead of raising
`CancelledError` when the cancel arrives after the awaited thing finished but before
`wait_for` resumes (CPython gh-86296; 3.12 rebuilt `wait_for` on `asyncio.timeout`).
redis-py puts it around every command it writes when the client has a socket timeout,
and the config file and Consul sources waited in it. A loop whose cancel was swallowed
ran on, and the `stop()` awaiting it waited forever. The fix at the root: our code uses
`asyncio.timeout`, never `asyncio.wait_for`, and our Redis clients give redis-py no
socket timeout (each call is bounded with `asyncio.timeout` by the caller instead).
`asyncio.timeout` itself is sound on 3.11.3+: a cancel that falls due together with its
deadline stays a cancel (tests/federation/test_redis_store.py shows both).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any, AsyncIterator, Coroutine

log = logging.getLogger("binderfed.tasks")


class Backoff:
    """Exponential backoff: `initial`, 2x, 4x, ... capped at `maximum`.

    Each delay is shortened at random by up to `jitter` (a fraction of it), so replicas
    that failed together do not retry together: 0 gives the plain doubling, 0.5 a delay
    between half the cap and the cap ("equal jitter").
    """

    def __init__(self, initial: float, maximum: float, *, jitter: float = 0.0, rng: random.Random | None = None):
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be between 0 and 1, not {jitter!r}")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.attempts = 0  # delays handed out since the last reset

    def next(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        ceiling = min(self.maximum, self.initial * 2 ** min(self.attempts, 64))
        self.attempts += 1
        return ceiling * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        """After a success: the next failure waits `initial` again."""
        self.attempts = 0


@contextlib.asynccontextmanager
async def time_limit(seconds: float, what: str) -> AsyncIterator[None]:
    """`asyncio.timeout(seconds)` whose TimeoutError says what did not answer in time."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise TimeoutError(f"no answer from {what} within {seconds:g} s") from None


def _release(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class BackgroundService:
    """A loop in its own task from `start()` to `stop()`, run by the app's lifecycle.

    A subclass writes `run()` as one step at a time with a `pause()` in between, each
    step catching and logging its own errors:

        async def run(self) -> None:
            while await self.pause(self.period):
                ...

    `pause()` returns False once `stop()` was called. `wake()` ends a pause early (a
    reload asked for by a signal). `spawn()` starts a child task (one probe, one write)
    that `stop()` cancels and waits for as well.
    """

    def __init__(self, name: str) -> None:
        self.service_name = name
        self._service_task: asyncio.Task[None] | None = None
        self._service_stop = False
        self._service_pause: asyncio.Future[None] | None = None
        self._service_woken = False
        self._service_children: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._service_task is not None and not self._service_task.done()

    @property
    def stopping(self) -> bool:
        """True from `stop()` until the next `start()`."""
        return self._service_stop

    async def start(self) -> None:
        """Start the loop (again, after a stop or after `run()` returned); no-op while it runs."""
        if self.is_running:
            return
        self._service_stop = False
        self._service_task = asyncio.get_running_loop().create_task(self._main(), name=self.service_name)

    async def stop(self) -> None:
        """Stop the loop and its children and wait until they have ended (their errors are logged).

        If the caller is cancelled while waiting, the cancel reaches the caller (the loop
        still ends on its own)."""
        self._service_stop = True
        task = self._service_task
        if task is not None and not task.done():
            if self._service_pause is not None:
                _release(self._service_pause)  # ends cleanly: pause() returns False
            else:
                task.cancel()                   # cut the current step's I/O short
        children = list(self._service_children)
        for child in children:
            child.cancel()
        pending = [t for t in (task, *children) if t is not None and not t.done()]
        if pending:
            await asyncio.wait(pending)
        if self._service_task is task:
            self._service_task = None

    async def _main(self) -> None:
        try:
            await self.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: say so, instead of a task that silently ended
            log.exception("background service %s stopped by an unexpected error", self.service_name)

    # -- inside run() ------------------------------------------------------------------------
    async def pause(self, seconds: float) -> bool:
        """Wait `seconds` (or until `wake()`); False as soon as the service is stopping."""
        if self._service_stop:
            return False
        if self._service_woken:
            self._service_woken = False
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(max(0.0, seconds), _release, waiter)
        self._service_pause = waiter
        try:
            await waiter
        finally:
            timer.cancel()
            self._service_pause = None
        self._service_woken = False
        return not self._service_stop

    def wake(self) -> None:
        """End the current pause now, or the next one at once."""
        self._service_woken = True
        _release(self._service_pause)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """A child task of this service: cancelled and waited for by `stop()`."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._service_children.add(task)
        task.add_done_callback(self._child_done)
        return task

    def _child_done(self, task: asyncio.Task[Any]) -> None:
        self._service_children.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: task %s failed", self.service_name, task.get_name(), exc_info=task.exception())
