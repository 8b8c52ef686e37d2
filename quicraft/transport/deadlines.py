"""Deadlines: one timer that fails each still-pending future once its time is up.

Used by the node for its proposals and reads, and by the client channels for their requests.
A timer per request (created, then cancelled when the request ends, which is what
`asyncio.timeout()` does) cost more than the request's own bookkeeping on both sides.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

#: The heap is not swept below this size.
SWEEP_MIN = 128


class Deadlines:
    """Ends each pending future with `error(message)` once its time is up.

    One timer for all of them, armed for the earliest deadline.

    A future that ends first stays in the heap, done, until the heap has doubled since it was
    last swept; the sweep drops the done ones. Held until their deadline instead, every
    write's future and result lived for the whole timeout, long enough to reach the garbage
    collector's oldest generation, whose full collections then cost the leader about a tenth
    of its CPU. A sweep is linear in the heap, at most once per as many adds: O(1) per add."""

    def __init__(self, error: Callable[[str], BaseException]) -> None:
        self._error = error
        self._heap: list[tuple[float, int, asyncio.Future[Any], str]] = []
        self._order = itertools.count()  # ties never compare the futures
        self._timer: asyncio.TimerHandle | None = None
        self._sweep_at = SWEEP_MIN  # heap size at which the done futures are dropped

    def add(self, future: asyncio.Future[Any], timeout: float, message: str) -> None:
        """End `future` with error(message) if it is still pending after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._order), future, message))
        if len(heap) >= self._sweep_at:
            heap[:] = [item for item in heap if not item[2].done()]
            heapq.heapify(heap)
            self._sweep_at = max(SWEEP_MIN, 2 * len(heap))
        if self._timer is not None and self._timer.when() > deadline:
            self._timer.cancel()  # an earlier deadline than the armed one (a shorter timeout)
            self._timer = None
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, future, message = heapq.heappop(heap)
            if not future.done():
                future.set_exception(self._error(message))
        self._timer = loop.call_at(heap[0][0], self._expire) if heap else None
