"""How a KV or management call gives up (client/client.py and client/mgmt.py `_call`): by its
deadline, not after one more backoff sleep (which overran it by up to 0.5 s), and, when a
node answered that it knows no leader, saying so rather than naming the last node that could
not be reached (an audit found `transfer` with 2 of 3 nodes down asking "is the cluster
running?" though a node had answered no_leader)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest
from client_fakes import FakeConnection

from quicraft.client import Client, ClientError, MgmtClient, MgmtError
from quicraft.client.channel import Channel, Retry
from quicraft.client.mgmt import CODEC as MGMT_CODEC
from quicraft.client.mgmt import OP_TIME_S
from quicraft.transport import TransportError
from quicraft.wire import decode_mgmt_request, encode_mgmt_response
from quicraft.wire.client import decode_request, encode_response

A, B = ("10.0.0.1", 7400), ("10.0.0.2", 7400)


class NoLeader:
    """A request stream to a node that answers every request with no_leader at once."""

    def __init__(self, mgmt: bool):
        self.mgmt = mgmt
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def write_frame(self, frame: bytes) -> None:
        if self.mgmt:
            error = {"code": "no_leader", "message": "no leader is known"}
            answer = encode_mgmt_response(id=decode_mgmt_request(frame).id, ok=False, error=error)
        else:
            error = {"code": "no_leader", "message": "no leader is known; retry shortly"}
            answer = encode_response(ok=False, error=error, id=decode_request(frame).id)
        self._inbox.put_nowait(answer)

    async def read_frame(self) -> bytes | None:
        return await self._inbox.get()


def _client(kind: str) -> Client | MgmtClient:
    if kind == "kv":
        return Client([A, B], cast(Any, None), timeout=1.0)
    return MgmtClient([A, B], cast(Any, None), "c1", timeout=1.0)


async def _give_up(client: Client | MgmtClient) -> str:
    """What a call says when it gives up: a read, or a transfer (which has a floor of its
    own: set to 0 in these tests)."""
    try:
        if isinstance(client, Client):
            await client.kv.get("k")
        else:
            await client.transfer()
    except (ClientError, MgmtError) as err:
        return str(err)
    finally:
        client._link.drop("test over")
    raise AssertionError("it did not give up")


@pytest.mark.parametrize("kind", ["kv", "mgmt"])
def test_no_leader_is_what_a_call_gives_up_with(monkeypatch: Any, kind: str) -> None:
    """A answers no_leader once, then neither A nor B can be reached until the deadline."""
    opened: list[tuple[str, int]] = []

    async def open_fake(address: Any, identity: Any, codec: Any) -> Channel[Any]:
        opened.append(address)
        if address == A and opened.count(A) == 1:
            stream = NoLeader(mgmt=codec is MGMT_CODEC)
            return Channel(cast(Any, FakeConnection()), cast(Any, stream), codec)
        raise TransportError(f"{address[0]}:{address[1]}: unreachable")

    monkeypatch.setattr(Channel, "open", staticmethod(open_fake))
    monkeypatch.setitem(OP_TIME_S, "transfer", 0.0)
    message = asyncio.run(asyncio.wait_for(_give_up(_client(kind)), 10.0))
    assert opened.count(B) >= 2  # the unreachable nodes were tried after the answer
    assert "no leader is known to 10.0.0.1:7400" in message
    assert "a majority of the voters may be down (quicraft mgmt health)" in message
    assert "unreachable" not in message and "is the cluster running" not in message


class PausesWatched:
    """Notes the loop time at which each of a call's backoff pauses (Retry.pause) ends."""

    def __init__(self, monkeypatch: Any) -> None:
        self.ends: list[float] = []
        pause = Retry.pause

        async def watched(retry: Retry) -> None:
            await pause(retry)
            self.ends.append(asyncio.get_running_loop().time())

        monkeypatch.setattr(Retry, "pause", watched)


@pytest.mark.parametrize("kind", ["kv", "mgmt"])
def test_the_last_backoff_sleep_ends_by_the_deadline(monkeypatch: Any, kind: str) -> None:
    """Every node answers no_leader at once: the call backs off 0.02, 0.04 ... 0.5 s between
    tries. Before, the sleep after the last try ran past the 1 s deadline (to about 1.12 s)."""

    async def open_fake(address: Any, identity: Any, codec: Any) -> Channel[Any]:
        stream = NoLeader(mgmt=codec is MGMT_CODEC)
        return Channel(cast(Any, FakeConnection()), cast(Any, stream), codec)

    monkeypatch.setattr(Channel, "open", staticmethod(open_fake))
    monkeypatch.setitem(OP_TIME_S, "transfer", 0.0)
    pauses = PausesWatched(monkeypatch)

    async def timed() -> tuple[float, str]:
        started = asyncio.get_running_loop().time()
        return started, await _give_up(_client(kind))

    started, message = asyncio.run(asyncio.wait_for(timed(), 10.0))
    assert "gave up after 1s: no leader is known" in message
    assert len(pauses.ends) >= 5
    # The margin is for the few statements between our clock reading and the client's.
    assert max(pauses.ends) <= started + 1.0 + 0.05


def _no_leader_anywhere(monkeypatch: Any) -> None:
    async def open_fake(address: Any, identity: Any, codec: Any) -> Channel[Any]:
        stream = NoLeader(mgmt=codec is MGMT_CODEC)
        return Channel(cast(Any, FakeConnection()), cast(Any, stream), codec)

    monkeypatch.setattr(Channel, "open", staticmethod(open_fake))


@pytest.mark.parametrize("op", ["add_member", "transfer"])
def test_with_no_leader_an_op_with_a_floor_gives_up_in_the_timeout(
    monkeypatch: Any, op: str
) -> None:
    """The floors of OP_TIME_S (add_member 75 s, transfer 15 s) bounded finding a leader too:
    with none, `mgmt add-member --timeout 1` waited 75 s (found by an audit)."""
    _no_leader_anywhere(monkeypatch)
    client = MgmtClient([A, B], cast(Any, None), "c1", timeout=1.0)

    async def call() -> str:
        try:
            if op == "add_member":
                await client.add_member("10.0.0.4:7400")
            else:
                await client.transfer()
        except MgmtError as err:
            return str(err)
        finally:
            client._link.drop("test over")
        raise AssertionError("it did not give up")

    started = time.monotonic()
    message = asyncio.run(asyncio.wait_for(call(), 10.0))
    assert time.monotonic() - started < 3.0
    assert message.startswith("gave up after 1s: no leader is known to 10.0.0.")
    assert OP_TIME_S[op] > 10.0  # the real floor, not one set for the test


class AnswersLater:
    """A request stream to a leader that answers add_member after `delay` seconds (a new node
    catching up)."""

    def __init__(self, delay: float):
        self.delay = delay
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def write_frame(self, frame: bytes) -> None:
        request = decode_mgmt_request(frame)
        result = {"node": "2649fe7bb6b555cf", "index": 7}
        answer = encode_mgmt_response(id=request.id, ok=True, result=result, op=request.op)
        asyncio.get_running_loop().call_later(self.delay, self._inbox.put_nowait, answer)

    async def read_frame(self) -> bytes | None:
        return await self._inbox.get()


def test_a_leader_serving_an_op_is_given_its_floor_whatever_the_timeout(monkeypatch: Any) -> None:
    """The floor still holds once a node serves the request: a catch-up longer than the
    client's timeout is waited for."""

    async def open_fake(address: Any, identity: Any, codec: Any) -> Channel[Any]:
        return Channel(cast(Any, FakeConnection()), cast(Any, AnswersLater(1.0)), codec)

    monkeypatch.setattr(Channel, "open", staticmethod(open_fake))
    monkeypatch.setitem(OP_TIME_S, "add_member", 5.0)  # the test's own: 75 s is long to fail
    client = MgmtClient([A, B], cast(Any, None), "c1", timeout=0.3)

    async def call() -> dict[str, Any]:
        try:
            return await client.add_member("10.0.0.4:7400")
        finally:
            client._link.drop("test over")

    assert asyncio.run(asyncio.wait_for(call(), 10.0)) == {"node": "2649fe7bb6b555cf", "index": 7}


class RegistersLate:
    """A request stream to a node that knows no leader: register succeeds only after
    `after` seconds (an election ends), and writes go on answering no_leader."""

    def __init__(self, after: float):
        self.after = asyncio.get_running_loop().time() + after
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def write_frame(self, frame: bytes) -> None:
        request = decode_request(frame)
        if request.op == "register" and asyncio.get_running_loop().time() >= self.after:
            answer = encode_response(ok=True, result={"session": 3}, op="register", id=request.id)
        else:
            error = {"code": "no_leader", "message": "no leader is known; retry shortly"}
            answer = encode_response(ok=False, error=error, id=request.id)
        self._inbox.put_nowait(answer)

    async def read_frame(self) -> bytes | None:
        return await self._inbox.get()


def test_a_first_write_gives_up_in_the_timeout_registering_included(monkeypatch: Any) -> None:
    """A write first registers its client's session. Each had a whole timeout of its own,
    so a first write could take twice the timeout before it gave up (found by an audit)."""
    streams: list[RegistersLate] = []

    async def open_fake(address: Any, identity: Any, codec: Any) -> Channel[Any]:
        if not streams:
            streams.append(RegistersLate(after=1.5))
        return Channel(cast(Any, FakeConnection()), cast(Any, streams[0]), codec)

    monkeypatch.setattr(Channel, "open", staticmethod(open_fake))
    client = Client([A, B], cast(Any, None), timeout=2.0)

    async def write() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(ClientError, match="gave up after 2s: no leader is known"):
                await client.kv.set("k", b"v")
            return loop.time() - started
        finally:
            client._link.drop("test over")

    took = asyncio.run(asyncio.wait_for(write(), 10.0))
    assert client._session == 3  # it did register, late
    assert took < 3.0  # before: 1.5 s registering, then 2 s more (3.5); midway, for a busy CPU


def _member(id: str, name: str, address: str) -> dict[str, Any]:
    return {
        "id": id, "name": name, "address": address, "voter": True, "role": "follower",
        "match": 5, "lag": 0, "last_contact_ms": 0, "term": None, "commit": None,
        "applied": None,
    }  # fmt: skip


class StatusLate:
    """A request stream to a follower that answers status after `delay` seconds, naming as
    its leader a node at B, and no_leader to anything else."""

    def __init__(self, delay: float):
        self.delay = delay
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def write_frame(self, frame: bytes) -> None:
        request = decode_mgmt_request(frame)
        if request.op == "status":
            members = [_member("aa", "n1", "10.0.0.1:7400"), _member("bb", "n2", "10.0.0.2:7400")]
            result = {
                "cluster_id": None, "leader": "bb", "term": 2, "commit": 5, "applied": 5,
                "node": "aa", "members": members,
            }  # fmt: skip
            answer = encode_mgmt_response(id=request.id, ok=True, result=result, op="status")
            asyncio.get_running_loop().call_later(self.delay, self._inbox.put_nowait, answer)
        else:
            error = {"code": "no_leader", "message": "no leader is known"}
            self._inbox.put_nowait(encode_mgmt_response(id=request.id, ok=False, error=error))

    async def read_frame(self) -> bytes | None:
        return await self._inbox.get()


class Silent:
    """A request stream to a node that takes requests and never answers (its connection
    still acknowledges: the watch over silent nodes leaves it alone)."""

    async def read_frame(self) -> bytes | None:
        await asyncio.Event().wait()
        return None

    def write_frame(self, frame: bytes) -> None:
        pass


@pytest.mark.parametrize("op", ["status", "remove_member"])
def test_an_operation_of_several_requests_gives_up_in_one_timeout(
    monkeypatch: Any, op: str
) -> None:
    """status() asks the leader again after the first node answers, and remove_member (like
    transfer and promote) first finds a name's id with status(): each request had a timeout
    of its own (the leader's status 3 s), so with a first answer late and the leader silent,
    status took up to the timeout and 3 s more, remove_member twice the timeout and more
    (found by an audit)."""

    async def open_fake(address: Any, identity: Any, codec: Any) -> Channel[Any]:
        stream = StatusLate(0.8) if address == A else Silent()
        return Channel(cast(Any, FakeConnection()), cast(Any, stream), codec)

    monkeypatch.setattr(Channel, "open", staticmethod(open_fake))
    client = MgmtClient([A, B], cast(Any, None), "c1", timeout=1.0)

    async def call() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if op == "status":
                assert (await client.status())["node"] == "aa"  # the leader's never came
            else:
                with pytest.raises(MgmtError):
                    await client.remove_member("n2")
            return loop.time() - started
        finally:
            client._link.drop("test over")

    took = asyncio.run(asyncio.wait_for(call(), 10.0))
    assert took < 1.5  # before: 1.8 s (status), 2.8 s (remove_member); midway, for a busy machine
