"""What the Python clients of the request/response protocols share (quicraft-client/1 and
quicraft-mgmt/1): one connection and one request stream to a node, and the list of nodes to
try, following the leader.

Rules of this file:
- All requests of a client, from however many tasks, share one QUIC connection and one
  stream on it (a Channel); each carries an id and its response finds it by that id.
- When the stream or the connection fails, every request still waiting fails with it; the
  next request opens a new channel (one at a time, however many callers).
- Where to go next is the caller's decision (Endpoints.move_on / go_to); this file only keeps
  the endpoints, the current one and its channel.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from quicraft.transport import Connection, Identity, Stream, TransportError
from quicraft.transport import connect as quic_connect
from quicraft.transport.address import Address, format_address, parse_address
from quicraft.wire import ProtocolError

#: A node that has not acknowledged a request (at the QUIC level) in this long is taken as
#: down: a live one does within its ACK delay (25 ms at most), however long it then works.
DELIVERY_S = 3.0


class UnsendableRequest(Exception):
    """The request's args are ones every node would refuse (the message says which): it was
    not sent, and sending it elsewhere or later cannot help."""


class Reply(Protocol):
    @property
    def id(self) -> int: ...


R = TypeVar("R", bound=Reply)


@dataclass(frozen=True, slots=True)
class Codec(Generic[R]):
    """A protocol's ALPN and how its requests and responses are framed."""

    alpn: str
    encode: Callable[[str, dict[str, Any], int, str | None], bytes]  #: (op, args, id, tp)
    decode: Callable[[bytes], R]


class Channel(Generic[R]):
    """One connection to a node and the request stream on it. Requests go out with ids; a
    reader task hands each response to the request with its id."""

    def __init__(self, conn: Connection, stream: Stream, codec: Codec[R]):
        self.conn = conn
        self._stream = stream
        self._codec = codec
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[R]] = {}
        self.failure: Exception | None = None
        self._reader = asyncio.create_task(self._read_responses())

    @classmethod
    async def open(cls, address: Address, identity: Identity, codec: Codec[R]) -> Channel[R]:
        conn = await quic_connect(address[0], address[1], identity, codec.alpn)
        return cls(conn, await conn.open_stream(), codec)

    @property
    def usable(self) -> bool:
        return self.failure is None and not self.conn.closed

    async def request(
        self, op: str, args: dict[str, Any], tp: str | None = None, *, delivered: bool = False
    ) -> R:
        """Send one request (with trace context `tp`) and wait for its response; `delivered`:
        first for its acknowledgement, TransportError if it is not in DELIVERY_S (for ops that
        may take long: a dead node is told from a slow one)."""
        if self.failure is not None:
            raise self.failure
        request_id = next(self._ids)
        try:
            frame = self._codec.encode(op, args, request_id, tp)
        except ProtocolError as err:
            raise UnsendableRequest(str(err)) from None
        response: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = response
        try:
            self._stream.write_frame(frame)
            if delivered:
                await self._delivered(op)
            return await response
        finally:
            self._waiting.pop(request_id, None)

    async def _delivered(self, op: str) -> None:
        try:
            async with asyncio.timeout(DELIVERY_S):
                await self._stream.drain(fully=True)
        except TimeoutError:
            raise TransportError(
                f"{op} was not acknowledged in {DELIVERY_S:g}s: the node may be down"
            ) from None

    def close(self, reason: str) -> None:
        self._reader.cancel()
        self.conn.close(reason)
        self._fail(TransportError(f"connection closed: {reason}"))

    async def _read_responses(self) -> None:
        try:
            while (frame := await self._stream.read_frame()) is not None:
                response = self._codec.decode(frame)
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


class Endpoints(Generic[R]):
    """The nodes a client may talk to, the one it talks to now, and its channel there."""

    def __init__(self, endpoints: list[Address], identity: Identity, codec: Codec[R]):
        if not endpoints:
            raise ValueError("give at least one endpoint")
        self.endpoints = list(endpoints)
        self.identity = identity
        self.codec = codec
        self.current = 0
        self.channel: Channel[R] | None = None
        self._opening = asyncio.Lock()  # one connection at a time, however many callers

    @property
    def current_endpoint(self) -> str:
        """The node talked to now, "HOST:PORT"."""
        return format_address(self.endpoints[self.current])

    async def connected(self) -> Channel[R]:
        channel = self.channel
        if channel is not None and channel.usable:
            return channel
        async with self._opening:
            if self.channel is None or not self.channel.usable:
                self.drop("reconnecting")
                endpoint = self.endpoints[self.current]
                self.channel = await Channel.open(endpoint, self.identity, self.codec)
            return self.channel

    def drop(self, reason: str) -> None:
        if self.channel is not None:
            self.channel.close(reason)
            self.channel = None

    def move_on(self, failed: Channel[R] | None) -> None:
        """Go to the next endpoint, unless another request already left `failed` (the channel
        this one used: None if it could not connect)."""
        if failed is not self.channel:
            return
        self.drop("trying another node")
        self.current = (self.current + 1) % len(self.endpoints)

    def go_to(self, address_text: str) -> None:
        """Talk to the node at `address_text` from now on (the leader, as a node said)."""
        try:
            address = parse_address(address_text)
        except ValueError:
            self.move_on(self.channel)
            return
        if address not in self.endpoints:
            self.endpoints.append(address)
        if self.current != self.endpoints.index(address):
            self.drop("following the leader")
            self.current = self.endpoints.index(address)


class EndpointsClient(Generic[R]):
    """What the KV and management clients share: `async with`, close(), and the node talked
    to now. A subclass sets `_link`."""

    _link: Endpoints[R]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def current_endpoint(self) -> str:
        """The node this client talks to now ("HOST:PORT"); after a write, the leader."""
        return self._link.current_endpoint

    async def close(self) -> None:
        self._link.drop("client closing")
