"""cancel_and_wait(): a shutdown ends even when a task loses its first cancel."""

from __future__ import annotations

import asyncio

from hub.tasks import cancel_and_wait


async def test_a_loop_that_loses_a_cancel_is_still_stopped():
    lost = []

    async def polling_loop():
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost.append(True)  # what a library turning the cancel into an error amounts to

    task = asyncio.create_task(polling_loop())
    await asyncio.sleep(0.02)
    await asyncio.wait_for(cancel_and_wait(task), timeout=5)
    assert lost and task.cancelled()


async def test_errors_of_stopped_tasks_are_dropped():
    async def failing():
        raise RuntimeError("boom")

    async def waiting():
        await asyncio.Event().wait()

    tasks = [asyncio.create_task(failing()), asyncio.create_task(waiting())]
    await asyncio.sleep(0)
    await cancel_and_wait(*tasks)
    assert all(task.done() for task in tasks)
