"""The Python client of `quicraft-client/1`: it finds the leader and retries for its caller.

    async with quicraft.connect(endpoints=["127.0.0.1:7401"], cluster="c1") as c:
        revision = await c.kv.set("config/mode", b"fast")
        value = await c.kv.get("config/mode")          # linearizable (ReadIndex)

Writes carry (session, seq) so a write retried after a timeout or a leader change is applied
once and returns its first result (Raft thesis §6.3). A follower answers `not_leader` with the
leader's address and the client goes there; a lost connection moves it to the next endpoint.
Errors that retrying cannot fix (forbidden, bad_request, session_expired) are raised at once.

All requests of a client, from however many tasks, share one QUIC connection and one stream
on it (a _Channel); each carries an id and its response finds it by that id.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from types import TracebackType
from typing import Any

from quicraft.transport import (
    ALPN_CLIENT,
    Connection,
    Identity,
    RefusedError,
    Stream,
    TransportError,
    load_identity,
)
from quicraft.transport import (
    connect as quic_connect,
)
from quicraft.transport.address import Address, format_address, parse_address
from quicraft.wire import ProtocolError, Response, decode_response, encode_request

from .kv import KV

log = logging.getLogger("quicraft.client")

#: Errors worth retrying elsewhere or later; anything else goes straight to the caller.
RETRYABLE = frozenset({"not_leader", "no_leader", "unavailable", "timeout"})
WRITES = frozenset({"set", "delete", "incr", "cas"})


class ClientError(Exception):
    """A request failed; `code` is the protocol's error code (see docs/client.md)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{message} ({code})")
        self.code = code


class _Channel:
    """One connection to a node and the request stream on it. Requests go out with ids; a
    reader task hands each response to the request with its id. When the stream or the
    connection fails, every request still waiting fails with it."""

    def __init__(self, conn: Connection, stream: Stream):
        self.conn = conn
        self._stream = stream
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Response]] = {}
        self.failure: Exception | None = None
        self._reader = asyncio.create_task(self._read_responses())

    @classmethod
    async def open(cls, address: Address, identity: Identity) -> _Channel:
        conn = await quic_connect(address[0], address[1], identity, ALPN_CLIENT)
        return cls(conn, await conn.open_stream())

    @property
    def usable(self) -> bool:
        return self.failure is None and not self.conn.closed

    async def request(self, op: str, args: dict[str, Any]) -> Response:
        if self.failure is not None:
            raise self.failure
        request_id = next(self._ids)
        response: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = response
        try:
            self._stream.write_frame(encode_request(op, args, id=request_id))
            return await response
        finally:
            self._waiting.pop(request_id, None)

    def close(self, reason: str) -> None:
        self._reader.cancel()
        self.conn.close(reason)
        self._fail(TransportError(f"connection closed: {reason}"))

    async def _read_responses(self) -> None:
        try:
            while (frame := await self._stream.read_frame()) is not None:
                response = decode_response(frame)
                waiter = self._waiting.get(response.id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(response)
            self._fail(TransportError("the node ended the request stream"))
        except (TransportError, ProtocolError, ConnectionError) as err:
            self._fail(err)

    def _fail(self, err: Exception) -> None:
        if self.failure is None:
            self.failure = err
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(err)


class Client:
    def __init__(self, endpoints: list[Address], identity: Identity, timeout: float = 10.0):
        if not endpoints:
            raise ValueError("give at least one endpoint")
        self.endpoints = list(endpoints)
        self.identity = identity
        self.timeout = timeout
        self.kv = KV(self)
        self._channel: _Channel | None = None
        self._opening = asyncio.Lock()  # one connection at a time, however many callers
        self._current = 0
        self._session: int | None = None
        self._seq = 0
        self._in_flight: set[int] = set()  # sequence numbers of writes not yet answered
        self._registering = asyncio.Lock()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def current_endpoint(self) -> str:
        """The node this client talks to now ("HOST:PORT"): the leader, after a write."""
        return format_address(self.endpoints[self._current])

    async def close(self) -> None:
        self._drop_channel("client closing")

    async def write(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """A write, applied exactly once however often it must be retried."""
        async with self._registering:
            if self._session is None:
                result = await self.call("register", {})
                self._session = int(result["session"])
        self._seq += 1
        seq = self._seq
        self._in_flight.add(seq)
        try:
            # `ack`: the node may forget our results below the oldest write still waiting.
            session = self._session
            extra = {"session": session, "seq": seq, "ack": min(self._in_flight)}
            return await self.call(op, {**args, **extra})
        except ClientError as err:
            if err.code == "session_expired" and self._session == session:
                # The next write registers a new session. This one is not retried: if it was
                # itself a retry, it may have been applied before the session expired.
                self._session = None
            raise
        finally:
            self._in_flight.discard(seq)

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send one request, following the leader and retrying until `timeout` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        delay = 0.02
        last = "no endpoint answered"
        while loop.time() < deadline:
            channel: _Channel | None = None
            try:
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    channel = await self._connected()
                    response = await channel.request(op, args)
            except (TransportError, ProtocolError, TimeoutError, ConnectionError) as err:
                if isinstance(err, RefusedError):
                    raise ClientError("forbidden", f"refused by the cluster: {err}") from None
                last = f"{format_address(self.endpoints[self._current])}: {err or 'timed out'}"
                self._move_on(channel)
            else:
                if response.ok:
                    return dict(response.result or {})
                error = response.error
                if error is None or error.code not in RETRYABLE:
                    code = error.code if error else "internal"
                    raise ClientError(code, error.message if error else "no error information")
                last = error.message
                if error.code == "not_leader" and error.leader_addr:
                    self._go_to(error.leader_addr)
                    continue
                if error.code in ("not_leader", "no_leader"):
                    self._move_on(channel)  # this node may be cut off from a majority
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        raise ClientError("timeout", f"gave up after {self.timeout:g}s: {last}")

    async def _connected(self) -> _Channel:
        channel = self._channel
        if channel is not None and channel.usable:
            return channel
        async with self._opening:
            if self._channel is None or not self._channel.usable:
                self._drop_channel("reconnecting")
                endpoint = self.endpoints[self._current]
                self._channel = await _Channel.open(endpoint, self.identity)
            return self._channel

    def _drop_channel(self, reason: str) -> None:
        if self._channel is not None:
            self._channel.close(reason)
            self._channel = None

    def _move_on(self, failed: _Channel | None) -> None:
        """Go to the next endpoint, unless another request already left `failed` (the channel
        this one used: None if it could not connect)."""
        if failed is not self._channel:
            return
        self._drop_channel("trying another node")
        self._current = (self._current + 1) % len(self.endpoints)

    def _go_to(self, leader_addr: str) -> None:
        try:
            address = parse_address(leader_addr)
        except ValueError:
            self._move_on(self._channel)
            return
        if address not in self.endpoints:
            self.endpoints.append(address)
        if self._current != self.endpoints.index(address):
            self._drop_channel("following the leader")
            self._current = self.endpoints.index(address)


def connect(
    endpoints: list[str] | str,
    cluster: str,
    certs: str | Path = "certs",
    name: str = "admin",
    timeout: float = 10.0,
) -> Client:
    """A client of `cluster` at `endpoints` ("HOST:PORT" strings), using the identity `name`
    from `certs/<cluster>/`. Use it with `async with`; it connects on first use."""
    if isinstance(endpoints, str):
        endpoints = [e for e in endpoints.split(",") if e.strip()]
    addresses = [parse_address(e) for e in endpoints]
    return Client(addresses, load_identity(Path(certs), cluster, name), timeout)
