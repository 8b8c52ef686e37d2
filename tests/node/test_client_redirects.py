"""Where the KV and management clients go when nodes send them elsewhere (client/channel.py
rules): leader hints that lead in a circle are followed at the call's backoff, not hundreds
of times a second over a new connection each; a node that refuses the connection (one of
another cluster listed by mistake) is passed by, and a call raises forbidden only once
every endpoint has refused it. Both found by an audit: two nodes naming each other made a
client open about 400 connections a second until its timeout, and a node of another
cluster listed first failed every call with forbidden though a node of the cluster was next."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import pytest
from client_fakes import FakeConnection

from quicraft.client import Client, ClientError, MgmtClient, MgmtError
from quicraft.client import events as events_module
from quicraft.client.channel import Channel
from quicraft.client.events import subscribe
from quicraft.client.mgmt import CODEC as MGMT_CODEC
from quicraft.node.events import log_position
from quicraft.transport import RefusedError
from quicraft.wire import Event, decode_mgmt_request, encode_event, encode_mgmt_response
from quicraft.wire.client import decode_request, encode_response

A, B, C = ("10.0.0.1", 7400), ("10.0.0.2", 7400), ("10.0.0.3", 7400)
_KV = {"op": "set", "key": "k", "revision": 7, "value": b"v", "previous": None}


class Node:
    """A request stream to a node that answers every request at once: with not_leader naming
    `leader`, or (None) with success."""

    def __init__(self, mgmt: bool, leader: tuple[str, int] | None):
        self.mgmt = mgmt
        self.leader = leader
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def write_frame(self, frame: bytes) -> None:
        request = decode_mgmt_request(frame) if self.mgmt else decode_request(frame)
        error = None
        result: dict[str, Any] | None = None
        if self.leader is not None:
            where = f"{self.leader[0]}:{self.leader[1]}"
            error = {"code": "not_leader", "message": "not the leader", "leader_addr": where}
        if self.mgmt:
            result = {"ok": True} if error is None else None
            answer = encode_mgmt_response(
                id=request.id, ok=error is None, result=result, error=error
            )
        else:
            result = {"value": b"v", "revision": 3} if error is None else None
            answer = encode_response(ok=error is None, result=result, error=error, id=request.id)
        self._inbox.put_nowait(answer)

    async def read_frame(self) -> bytes | None:
        return await self._inbox.get()


def _client(kind: str, endpoints: list[tuple[str, int]]) -> Client | MgmtClient:
    if kind == "kv":
        return Client(endpoints, cast(Any, None), timeout=1.0)
    return MgmtClient(endpoints, cast(Any, None), "c1", timeout=1.0)


async def _ask(client: Client | MgmtClient) -> None:
    try:
        if isinstance(client, Client):
            assert await client.kv.get("k") == b"v"
        else:
            assert (await client.health())["ok"]
    finally:
        client._link.drop("test over")


@pytest.mark.parametrize("kind", ["kv", "mgmt"])
def test_nodes_naming_each_other_are_asked_at_the_backoff(monkeypatch: Any, kind: str) -> None:
    opened: list[tuple[str, int]] = []

    async def open_fake(address: Any, identity: Any, codec: Any) -> Channel[Any]:
        opened.append(address)
        await asyncio.sleep(0.002)  # a handshake on loopback
        stream = Node(codec is MGMT_CODEC, leader=B if address == A else A)
        return Channel(cast(Any, FakeConnection()), cast(Any, stream), codec)

    monkeypatch.setattr(Channel, "open", staticmethod(open_fake))
    with pytest.raises(ClientError) as raised:
        asyncio.run(asyncio.wait_for(_ask(_client(kind, [A, B])), 10.0))
    assert raised.value.code == "timeout"
    # Backing off 0.02, 0.04 ... 0.5 s: 7 in the 1 s timeout. Before: about 400.
    assert 3 <= len(opened) <= 12, len(opened)


@pytest.mark.parametrize("kind", ["kv", "mgmt"])
def test_a_leader_hint_is_followed_at_once(monkeypatch: Any, kind: str) -> None:
    async def open_fake(address: Any, identity: Any, codec: Any) -> Channel[Any]:
        stream = Node(codec is MGMT_CODEC, leader=B if address == A else None)
        return Channel(cast(Any, FakeConnection()), cast(Any, stream), codec)

    monkeypatch.setattr(Channel, "open", staticmethod(open_fake))

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _ask(_client(kind, [A]))
        return loop.time() - started

    assert asyncio.run(timed()) < 0.015  # no backoff pause (0.02 s) for the first hint


def _refused_at(*refusing: tuple[str, int]) -> Any:
    async def open_fake(address: Any, identity: Any, codec: Any) -> Channel[Any]:
        if address in refusing:
            where = f"{address[0]}:{address[1]}"
            raise RefusedError(f"refused the server at {where}: wrong_cluster", "wrong_cluster")
        stream = Node(codec is MGMT_CODEC, leader=None)
        return Channel(cast(Any, FakeConnection()), cast(Any, stream), codec)

    return staticmethod(open_fake)


@pytest.mark.parametrize("kind", ["kv", "mgmt"])
def test_a_node_that_refuses_the_client_is_passed_by(monkeypatch: Any, kind: str) -> None:
    monkeypatch.setattr(Channel, "open", _refused_at(A))
    client = _client(kind, [A, B])
    asyncio.run(_ask(client))  # before: forbidden
    assert client.current_endpoint == "10.0.0.2:7400"


@pytest.mark.parametrize("kind", ["kv", "mgmt"])
def test_a_call_every_endpoint_refuses_raises_forbidden_at_once(
    monkeypatch: Any, kind: str
) -> None:
    monkeypatch.setattr(Channel, "open", _refused_at(A, B))

    async def timed() -> tuple[float, ClientError]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ClientError) as raised:
            await _ask(_client(kind, [A, B]))
        return loop.time() - started, raised.value

    took, error = asyncio.run(timed())
    assert error.code == "forbidden" and "wrong_cluster" in str(error)
    assert isinstance(error, MgmtError) == (kind == "mgmt")
    assert took < 0.5


@pytest.mark.parametrize("kind", ["kv", "mgmt"])
def test_a_refusal_is_the_reason_given_when_no_other_node_answers(
    monkeypatch: Any, kind: str
) -> None:
    async def open_fake(address: Any, identity: Any, codec: Any) -> Channel[Any]:
        if address == A:
            raise RefusedError("refused the server at 10.0.0.1:7400: expired", "expired")
        await asyncio.sleep(10)  # B and C never answer
        raise AssertionError("not reached")

    monkeypatch.setattr(Channel, "open", staticmethod(open_fake))
    with pytest.raises(ClientError) as raised:
        asyncio.run(asyncio.wait_for(_ask(_client(kind, [A, B, C])), 10.0))
    assert raised.value.code == "timeout"
    assert "refused the server at 10.0.0.1:7400: expired; no other endpoint answered" in str(
        raised.value
    )


def test_a_subscription_passes_by_a_node_that_refuses_it(monkeypatch: Any) -> None:
    """events() raised forbidden at the first node that refused the connection, as the
    request clients did, though the next endpoint was a node of the cluster (found by an
    audit). It passes it by; forbidden only once every endpoint has refused."""

    class Subscribed(FakeConnection):
        async def open_stream(self) -> Subscribed:
            return self

        def write_frame(self, frame: bytes) -> None:
            pass

        async def read_frame(self) -> bytes | None:
            return encode_event(Event(log_position(7), "kv", 0, _KV))

    async def dial(host: str, port: int, *args: Any, **kwargs: Any) -> Subscribed:
        if (host, port) != B:
            raise RefusedError(f"{host}:{port} is of another cluster", "wrong_cluster")
        return Subscribed()

    monkeypatch.setattr(events_module, "quic_connect", dial)
    monkeypatch.setattr(events_module, "RETRY_MIN_S", 0.01)

    async def first(endpoints: list[tuple[str, int]]) -> Event:
        async with contextlib.aclosing(subscribe(endpoints, cast(Any, None))) as stream:
            async for event in stream:
                return event
        raise AssertionError("no event")

    assert asyncio.run(first([A, B])).pos == log_position(7)
    with pytest.raises(ClientError) as refused:
        asyncio.run(first([A, C]))
    assert refused.value.code == "forbidden" and "of another cluster" in str(refused.value)
