"""Stopping background tasks for good.

Here, at the bottom of the dependency arrow, so the agent (hub), the prober and the
report reader (health) share it.
"""

from __future__ import annotations

import asyncio


async def cancel_and_wait(*tasks: asyncio.Task) -> None:
    """Cancel `tasks` and wait until every one has ended; their errors are dropped.

    A task is cancelled again for as long as it runs. A cancel can be lost: a call that
    turns the `CancelledError` into another error (in Python 3.11 `asyncio.timeout`
    does when its deadline and the cancel coincide) lets a polling loop's `except
    Exception` carry on. Twice a test teardown waited on such a loop (the report
    reader, the agent) until the test timeout; a single cancel would leave the loop
    running and the caller waiting forever.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
