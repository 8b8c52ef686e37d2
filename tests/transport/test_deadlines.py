"""Deadlines: the one timer behind the node's proposal and read timeouts and the client's
request timeouts."""

from __future__ import annotations

import asyncio

import pytest

from quicraft.transport.deadlines import SWEEP_MIN, Deadlines


def test_a_pending_future_fails_with_the_given_error_at_its_deadline() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(TimeoutError)
        late: asyncio.Future[None] = loop.create_future()
        early: asyncio.Future[None] = loop.create_future()
        deadlines.add(late, 0.2, "late")
        deadlines.add(early, 0.02, "early")  # shorter than the armed timer: re-armed sooner
        started = loop.time()
        with pytest.raises(TimeoutError, match="early"):
            await early
        assert loop.time() - started < 0.15
        assert not late.done()
        with pytest.raises(TimeoutError, match="late"):
            await late

    asyncio.run(scenario())


def test_ended_futures_are_swept_and_the_others_still_time_out() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(LookupError)
        slow: asyncio.Future[None] = loop.create_future()
        deadlines.add(slow, 0.05, "too slow")
        for _ in range(1000):
            done: asyncio.Future[None] = loop.create_future()
            deadlines.add(done, 60, "never")
            done.set_result(None)
        # Ended futures are swept out as the heap grows: it stays near its sweep size.
        assert len(deadlines._heap) <= 2 * SWEEP_MIN
        with pytest.raises(LookupError, match="too slow"):
            await slow

    asyncio.run(scenario())


def test_a_future_that_ended_first_is_left_as_it_is() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(TimeoutError)
        answered: asyncio.Future[int] = loop.create_future()
        cancelled: asyncio.Future[int] = loop.create_future()
        deadlines.add(answered, 0.01, "x")
        deadlines.add(cancelled, 0.01, "x")
        answered.set_result(7)
        cancelled.cancel()
        await asyncio.sleep(0.05)
        assert answered.result() == 7
        assert cancelled.cancelled()

    asyncio.run(scenario())
