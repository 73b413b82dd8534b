"""Calls made in one turn of the event loop, sent to Redis as one.

Under load many launches reach their record step in the same turn of the event loop
(every request whose bytes arrived in one wake-up). Each `EVALSHA` through redis-py
costs far more of the router's CPU than the script costs Redis, so `Batch` gathers the
items submitted during one turn and hands them to `send` together, in the order they
came; each caller gets its own answer back. A lone call waits for one turn only.

Semantics stay those of one call per item: `send` must treat the items one after the
other (the record script checks and counts each launch atomically, in order). A caller
that is cancelled before the batch goes out is left out of it; one cancelled after it
went out is like a cancelled command: it may have taken effect. When `send` fails,
every caller of that batch gets its exception.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")

MAX_ITEMS = 64  # items per send: bounds the time one script holds Redis


class Batch(Generic[Item, Answer]):
    def __init__(self, send: Callable[[list[Item]], Awaitable[Sequence[Answer]]], max_items: int = MAX_ITEMS):
        self.send = send
        self.max_items = max_items
        self._pending: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Answer:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)   # after every task already ready in this turn
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        live = [(item, future) for item, future in pending if not future.done()]
        for start in range(0, len(live), self.max_items):
            task = asyncio.ensure_future(self._send(live[start:start + self.max_items]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Item, asyncio.Future[Answer]]]) -> None:
        try:
            answers = await self.send([item for item, _ in batch])
            if len(answers) != len(batch):
                raise ValueError(f"{len(answers)} answers to a batch of {len(batch)}")
        except Exception as exc:  # every caller of the batch gets it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the store closes): so are its callers
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), answer in zip(batch, answers):
            if not future.done():
                future.set_result(answer)

    async def aclose(self) -> None:
        """Cancel the batches still out (their callers get CancelledError)."""
        for task in list(self._sending):
            task.cancel()
        if self._sending:
            await asyncio.wait(list(self._sending))
