"""A request's attempt timeout (client/channel.py, client/client.py): a node that takes a
request and never answers fails it with TimeoutError after the attempt's time, leaves
nothing waiting, and the client moves on to the next node, where the write succeeds."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from quicraft.client.channel import Channel
from quicraft.client.client import CODEC, Client
from quicraft.wire.client import decode_request, encode_response

A, B = ("10.0.0.1", 7400), ("10.0.0.2", 7400)


class FakeConnection:
    closed = False
    ended = False

    def silent_for(self) -> float:
        return 0.0  # never probed: the attempt timeout, not the watchdog, ends these requests

    def probe(self) -> None:
        pass

    def close(self, reason: str) -> None:
        self.closed = True


class FakeStream:
    """A request stream to a node that answers every request at once, or never."""

    def __init__(self, answers: bool):
        self.answers = answers
        self.requests: list[str] = []
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def write_frame(self, frame: bytes) -> None:
        request = decode_request(frame)
        self.requests.append(request.op)
        if self.answers:
            result = {"revision": 7} if request.op == "set" else {"session": 1}
            self._inbox.put_nowait(
                encode_response(ok=True, result=result, op=request.op, id=request.id)
            )

    async def read_frame(self) -> bytes | None:
        return await self._inbox.get()


def test_an_unanswered_request_times_out_and_leaves_nothing_waiting() -> None:
    async def scenario() -> None:
        channel = Channel(cast(Any, FakeConnection()), cast(Any, FakeStream(False)), CODEC)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):  # wait_for's own limit only if the deadline never fires
            await asyncio.wait_for(channel.request("get", {"key": "k"}, timeout=0.05), 2.0)
        assert 0.04 <= loop.time() - started < 1.0
        assert not channel._waiting
        channel.close("test over")

    asyncio.run(scenario())


def test_the_client_moves_on_after_an_attempt_that_got_no_answer(monkeypatch: Any) -> None:
    monkeypatch.setattr("quicraft.client.client.ATTEMPT_S", 0.05)
    streams = {A: FakeStream(False), B: FakeStream(True)}

    async def open_fake(address: Any, identity: Any, codec: Any) -> Channel[Any]:
        return Channel(cast(Any, FakeConnection()), cast(Any, streams[address]), codec)

    monkeypatch.setattr(Channel, "open", staticmethod(open_fake))

    async def scenario() -> None:
        client = Client([A, B], cast(Any, None), timeout=5.0)
        revision = await asyncio.wait_for(client.kv.set("k", b"v"), 3.0)
        assert revision == 7
        assert streams[A].requests == ["register"]  # it waited one attempt there, then left
        assert streams[B].requests == ["register", "set"]
        assert client._link.current_endpoint == "10.0.0.2:7400"
        client._link.drop("test over")

    asyncio.run(scenario())
