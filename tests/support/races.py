"""Put two events into one event-loop iteration on purpose, so a race becomes a test.

- `on_next_write(monkeypatch, action)`: run `action` the moment the next asyncio stream
  write has been drained, for example just as a Redis command's bytes went to the socket.
- `frozen_loop_clock()`: stop the running loop's clock and move it by hand. Every
  deadline (`asyncio.timeout`, `call_later`, `sleep`) is then an exact number, so a test
  can make a timeout and a stop request fall due together. Under a frozen clock only
  `spin_until()` waits: it counts loop iterations, not seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Callable, Iterator

from tests.support.clock import FakeClock

# Loop iterations `spin_until` allows: far more than any chain of wake-ups in these tests.
SPIN = 20_000


def on_next_write(monkeypatch, action: Callable[[], None]) -> list[bool]:
    """Run `action` once, right after the next `StreamWriter.drain()` returns; returns a
    list that holds True once it ran."""
    real_drain = asyncio.StreamWriter.drain
    fired: list[bool] = []

    async def drain(writer: asyncio.StreamWriter) -> None:
        await real_drain(writer)
        if not fired:
            fired.append(True)
            action()

    monkeypatch.setattr(asyncio.StreamWriter, "drain", drain)
    return fired


@contextlib.contextmanager
def frozen_loop_clock() -> Iterator[FakeClock]:
    """The running loop's `time()` stands still until the test moves it (real I/O goes on)."""
    loop = asyncio.get_running_loop()
    clock = FakeClock(loop.time())
    loop.time = clock  # type: ignore[method-assign]  # an instance attribute, removed below
    try:
        yield clock
    finally:
        del loop.time


async def spin_until(predicate: Callable[[], bool], iterations: int = SPIN) -> bool:
    """Let the loop run until `predicate()` holds, at most `iterations` times round; its last value."""
    for _ in range(iterations):
        if predicate():
            return True
        await asyncio.sleep(0)
    return predicate()
