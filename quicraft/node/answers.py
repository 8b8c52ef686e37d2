"""Answers: the answering half of one request stream, shared by the client and mgmt services.

Rules:
- Every request read from the stream is counted with begin() and gets exactly one answer
  through send(); the count is what is in flight.
- room() holds the reader back while `limit` requests are in flight or while too much written
  data awaits acknowledgement (Stream.drain), so a client that sends without reading cannot
  grow the node's memory: QUIC's flow control pushes back on it instead.
- A client that has gone away is not an error: its answers are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib

from quicraft.transport import Stream, TransportError


class Answers:
    def __init__(self, stream: Stream, limit: int):
        self._stream = stream
        self._limit = limit
        self.in_flight = 0
        self._changed = asyncio.Event()

    def begin(self) -> None:
        self.in_flight += 1

    def send(self, frame: bytes) -> None:
        """The answer to one request begun earlier."""
        self.in_flight -= 1
        self._changed.set()
        with contextlib.suppress(TransportError):  # the client is gone: no one left to answer
            self._stream.write_frame(frame)

    async def room(self) -> None:
        """Until another request may start."""
        while self.in_flight >= self._limit:
            self._changed.clear()
            await self._changed.wait()
        await self._stream.drain()

    async def all_answered(self) -> None:
        while self.in_flight:
            self._changed.clear()
            await self._changed.wait()
