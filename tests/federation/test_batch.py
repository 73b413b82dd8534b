"""federation.stores.batch: the calls of one event-loop turn go out as one, each answered alone."""

from __future__ import annotations

import asyncio

import pytest

from federation.stores.batch import Batch


class Sender:
    def __init__(self, fail: BaseException | None = None, short: bool = False):
        self.batches: list[list[int]] = []
        self.fail = fail
        self.short = short
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        answers = [item * 10 for item in items]
        return answers[:-1] if self.short else answers


async def test_calls_of_one_turn_are_one_send_in_order_each_with_its_answer():
    sender = Sender()
    batch = Batch(sender)
    answers = await asyncio.gather(*(batch.submit(i) for i in range(5)))
    assert answers == [0, 10, 20, 30, 40]
    assert sender.batches == [[0, 1, 2, 3, 4]]


async def test_a_lone_call_is_sent_alone_and_the_next_turn_starts_a_new_batch():
    sender = Sender()
    batch = Batch(sender)
    assert await batch.submit(7) == 70
    assert await batch.submit(8) == 80
    assert sender.batches == [[7], [8]]


async def test_a_big_turn_is_split_into_sends_of_at_most_max_items():
    sender = Sender()
    batch = Batch(sender, max_items=3)
    assert await asyncio.gather(*(batch.submit(i) for i in range(7))) == [i * 10 for i in range(7)]
    assert sender.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_caller_cancelled_before_the_send_is_left_out_of_it():
    sender = Sender()
    batch = Batch(sender)
    calls = [asyncio.ensure_future(batch.submit(i)) for i in range(3)]
    await asyncio.sleep(0)        # every call is waiting for its batch
    calls[1].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] == 0 and results[2] == 20 and isinstance(results[1], asyncio.CancelledError)
    assert sender.batches == [[0, 2]]


async def test_a_failed_send_fails_every_caller_of_that_batch_only():
    sender = Sender(fail=ConnectionError("redis went away"))
    batch = Batch(sender)
    results = await asyncio.gather(*(batch.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) and "went away" in str(r) for r in results)
    sender.fail = None
    assert await batch.submit(4) == 40


async def test_a_send_answering_too_few_fails_its_callers_instead_of_leaving_them_waiting():
    batch = Batch(Sender(short=True))
    results = await asyncio.gather(*(batch.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ValueError) and "2 answers to a batch of 3" in str(r) for r in results)


async def test_close_cancels_the_batches_still_out_and_their_callers():
    sender = Sender()
    sender.release.clear()
    batch = Batch(sender)
    calls = [asyncio.ensure_future(batch.submit(i)) for i in range(2)]
    for _ in range(10):           # a few turns of the loop: the batch goes out, its send waits
        if sender.batches:
            break
        await asyncio.sleep(0)
    assert sender.batches == [[0, 1]]
    await batch.aclose()
    for call in calls:
        with pytest.raises(asyncio.CancelledError):
            await call
