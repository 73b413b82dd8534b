"""The one fake clock of the tests: a clock the test moves by hand.

Inject it where code would read `time.time()` (a store's `clock=`), `time.monotonic()`,
or, through `tests.support.races.frozen_loop_clock`, the event loop's own `time()`.
"""

from __future__ import annotations

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def advance_to(self, when: float) -> None:
        """Move to `when`, never back."""
        self.now = max(self.now, when)
