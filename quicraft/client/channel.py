"""What the Python clients of the request/response protocols share (quicraft-client/1 and
quicraft-mgmt/1): one connection and one request stream to a node, and the list of nodes to
try, following the leader.

Rules of this file:
- All requests of a client, from however many tasks, share one QUIC connection and one
  stream on it (a Channel); each carries an id and its response finds it by that id.
- When the stream or the connection fails, every request still waiting fails with it; the
  next request opens a new channel (one at a time, however many callers).
- A request given a timeout fails with TimeoutError once it has waited that long; one timer
  serves all of a channel's requests (transport/deadlines.py), cheaper per request than an
  `asyncio.timeout()` around each.
- Where to go next is the caller's decision (Endpoints.move_on / go_to); this file only keeps
  the endpoints, the current one and its channel.
- A client belongs to the event loop it first runs in (its connections, timers and tasks live
  there), and once closed it stays closed: both are checked before any request (Lifetime).
  Closing closes every connection it opened, its subscriptions' too, and waits until each is
  over and its UDP socket freed (at most CLOSE_WAIT_S): nothing is left open when the program
  ends right after.
- A node that died under a channel sends nothing, and QUIC would notice only at its idle
  timeout: while requests wait, a channel whose node has sent nothing for PROBE_S asks it
  for an acknowledgement, and fails them all (TransportError) if it stays silent for as
  long again. Callers then move on in about a second, not after their whole timeout; a live
  node, however long an operation takes, acknowledges at once. For DOWN_S after that, a
  leader hint naming that node is not followed, and moving on passes it by: the other nodes
  go on naming their old leader until they have elected another.
- A node that refuses the connection (RefusedError: a node of another cluster listed by
  mistake, one given another CA) is passed by as one that cannot be reached: a call raises
  forbidden only once every endpoint has refused it (Refusals), or when it gives up with a
  refusal the last word. Before, the first refusal failed every call, though a node of the
  cluster was listed next.
- A leader hint is followed at once the first time in a call; each hint after that waits the
  call's backoff first (Retry), so that nodes naming each other as leader (stale hints while
  they elect one, or addresses that reach another node) are not asked hundreds of times a
  second, each time over a new connection.
- A node that answers nothing at all (frozen, its host gone, packets dropped) would hold a
  connect for the handshake's whole 5 s: an attempt to connect waits CONNECT_S, then the
  caller tries the next node. Attempts in a row that get no answer wait twice as long each
  (ConnectPace), so that nodes slow to answer are reached all the same.
"""

from __future__ import annotations

import asyncio
import itertools
import warnings
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from quicraft.transport import Connection, Identity, RefusedError, Stream, TransportError
from quicraft.transport import connect as quic_connect
from quicraft.transport.address import Address, format_address, parse_address
from quicraft.transport.deadlines import Deadlines
from quicraft.wire import ProtocolError

PROBE_S = 0.5
DOWN_S = 3.0
#: The longest close() waits for the client's connections to end (three probe timeouts: tens
#: of ms on a LAN); their sockets are freed at once after that.
CLOSE_WAIT_S = 1.0
#: How long a first attempt to connect waits for the node's handshake: tens of ms on a LAN,
#: even for a busy node. Doubled after each attempt in a row that got no answer, up to
#: CONNECT_MAX_S (below the transport's own 5 s, which would otherwise say it first).
CONNECT_S = 1.0
CONNECT_MAX_S = 4.0
#: The pauses between a call's attempts (Retry): short at first, as a leader hint or a new
#: leader is usually a moment away, and no shorter than this once a node stays down.
RETRY_FIRST_S = 0.02
RETRY_MAX_S = 0.5
CLOSED = "the client is closed; make a new one to go on"
OTHER_LOOP = (
    "this client belongs to the event loop it first ran in, and this is another one: make "
    "one client per event loop (for instance in the coroutine that asyncio.run runs)"
)

T = TypeVar("T")


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
        self.silent = False  #: closed because the node stopped answering
        self._reader = asyncio.create_task(self._read_responses())
        self._watchdog: asyncio.Task[None] | None = None
        self._deadlines = Deadlines(TimeoutError)

    @classmethod
    async def open(cls, address: Address, identity: Identity, codec: Codec[R]) -> Channel[R]:
        conn = await quic_connect(address[0], address[1], identity, codec.alpn)
        return cls(conn, await conn.open_stream(), codec)

    @property
    def usable(self) -> bool:
        return self.failure is None and not self.conn.closed

    async def request(
        self, op: str, args: dict[str, Any], tp: str | None = None, timeout: float | None = None
    ) -> R:
        """Send one request (with trace context `tp`) and wait for its response, or with
        `timeout`, at most that many seconds (then TimeoutError)."""
        if self.failure is not None:
            raise self.failure
        request_id = next(self._ids)
        try:
            frame = self._codec.encode(op, args, request_id, tp)
        except ProtocolError as err:
            raise UnsendableRequest(str(err)) from None
        response: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = response
        if timeout is not None:
            self._deadlines.add(response, timeout, "timed out")
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch())
        try:
            self._stream.write_frame(frame)
            return await response
        finally:
            self._waiting.pop(request_id, None)

    async def _watch(self) -> None:
        """While requests wait: fail them if the node is silent (see the module rules)."""
        await self.close_if_silent(lambda: bool(self._waiting))

    async def close_if_silent(self, busy: Callable[[], bool]) -> None:
        """While busy(): close the channel if its node goes silent (see the module rules).
        Requests start this themselves; work on a stream of its own (a backup) runs it."""
        while busy() and self.usable:
            await asyncio.sleep(PROBE_S)
            if self.conn.silent_for() < PROBE_S:
                continue
            self.conn.probe()
            await asyncio.sleep(PROBE_S)
            if busy() and self.usable and self.conn.silent_for() >= PROBE_S:
                self.silent = True
                self.close(f"the node sent nothing for {self.conn.silent_for():.1f}s")
                return

    def close(self, reason: str) -> None:
        self._reader.cancel()
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
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


class Retry:
    """The attempts of one call until its deadline (a loop time, which the caller may move):
    between two attempts a pause of RETRY_FIRST_S, doubling up to RETRY_MAX_S, that never
    ends past the deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._delay = RETRY_FIRST_S
        self._hinted = False

    def left(self) -> float:
        """Seconds until the deadline (0 or less once it has passed)."""
        return self.deadline - self._loop.time()

    async def pause(self) -> None:
        await asyncio.sleep(min(self._delay, max(0.0, self.left())))
        self._delay = min(self._delay * 2, RETRY_MAX_S)

    async def before_hint(self) -> None:
        """Before following a leader hint: at once the first time in the call, after a
        pause later (see the module rules)."""
        if self._hinted:
            await self.pause()
        self._hinted = True


class Refusals:
    """The endpoints that refused one call's connection, and the last refusal (see the
    module rules)."""

    def __init__(self) -> None:
        self.endpoints: set[str] = set()
        self.last: RefusedError | None = None

    def why_given_up(self) -> str | None:
        """What a call that gives up says, if a refusal is the last word it had."""
        return None if self.last is None else f"{self.last}; no other endpoint answered"

    def note(self, link: Endpoints[Any], err: RefusedError) -> bool:
        """Note that the current endpoint refused; True once every endpoint has."""
        self.endpoints.add(link.current_endpoint)
        self.last = err
        return self.endpoints >= {format_address(a) for a in link.endpoints}


class ConnectPace:
    """How long the next attempt to connect may wait for an answer (see the module rules)."""

    def __init__(self) -> None:
        self.unanswered = 0  #: attempts in a row that got no answer in their time

    async def connect(self, attempt: Coroutine[Any, Any, T], where: str) -> T:
        """The result of `attempt` (a connect to `where`), or TransportError if it takes
        longer than this attempt's time."""
        limit = min(CONNECT_S * 2**self.unanswered, CONNECT_MAX_S)
        try:
            async with asyncio.timeout(limit):
                result = await attempt
        except TimeoutError:
            self.unanswered += 1
            raise TransportError(f"{where} did not answer in {limit:g}s") from None
        self.unanswered = 0
        return result


async def _abandon(task: asyncio.Future[T], drop: Callable[[T], object] | None) -> None:
    """Cancel `task`, whose caller leaves without it, and wait for it to end. A result it
    made all the same goes to `drop`; an error it raised is read here, or asyncio would
    print it with a traceback as never retrieved."""
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is None and drop is not None:
        drop(task.result())


class Lifetime:
    """Whether a client is open, the event loop it belongs to, and the connections it opened
    that are not over yet (see the module rules). `closed_error` makes the error that a
    closed client raises."""

    def __init__(self, closed_error: Callable[[str], Exception] = RuntimeError):
        self.closed = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._closed_error = closed_error
        self._connections: set[Connection] = set()
        self._closing: asyncio.Future[None] | None = None  # done once closed

    def check(self) -> None:
        """Raise unless the client may be used here and now."""
        if self.closed:
            raise self._closed_error(CLOSED)
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        elif loop is not self.loop:
            raise RuntimeError(OTHER_LOOP)

    def track(self, conn: Connection) -> None:
        """Close `conn` with the client, and wait for it then."""
        self._connections = {c for c in self._connections if not c.ended}
        self._connections.add(conn)
        if self.closed:  # it was being opened while the client closed
            conn.close("client closed")

    async def unless_closed(
        self, work: Coroutine[Any, Any, T], drop: Callable[[T], object] | None = None
    ) -> T | None:
        """The result of `work`, or None if the client closes first (`work` is cancelled).
        A result that `work` made as its caller was being cancelled goes to `drop` (a
        connection to close, say): the caller will never take it."""
        if self.closed:
            work.close()
            return None
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(work)
        either: set[asyncio.Future[Any]] = {task, self._closing}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await _abandon(task, drop)
            raise
        if not task.done():  # the client closed first
            await _abandon(task, None)
        return None if task.cancelled() else task.result()

    async def close(self) -> None:
        self.closed = True
        owner = self.loop
        if owner is not None and owner is not asyncio.get_running_loop():
            # Its connections live in that loop, and only it can close them (if it still can).
            if not owner.is_closed():
                owner.call_soon_threadsafe(self._shut)
            return
        self._shut()
        closing = list(self._connections)
        await asyncio.gather(*(conn.wait_closed(CLOSE_WAIT_S) for conn in closing))
        self._connections.difference_update(closing)

    def _shut(self) -> None:
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        for conn in self._connections:
            conn.close("client closed")


class Endpoints(Generic[R]):
    """The nodes a client may talk to, the one it talks to now, and its channel there."""

    def __init__(
        self,
        endpoints: list[Address],
        identity: Identity,
        codec: Codec[R],
        closed_error: Callable[[str], Exception] = RuntimeError,
    ):
        if not endpoints:
            raise ValueError("give at least one endpoint")
        self.endpoints = list(endpoints)
        self.identity = identity
        self.codec = codec
        self.life = Lifetime(closed_error)
        self.current = 0
        self.channel: Channel[R] | None = None
        self._opening = asyncio.Lock()  # one connection at a time, however many callers
        self._down: dict[Address, float] = {}  # endpoint -> loop time its node went silent
        self._pace = ConnectPace()

    @property
    def current_endpoint(self) -> str:
        """The node talked to now, "HOST:PORT"."""
        return format_address(self.endpoints[self.current])

    def failure(self, err: BaseException) -> str:
        """What went wrong with the node talked to now, naming it once."""
        return failure_at(self.current_endpoint, err)

    def open_channel(self) -> Channel[R] | None:
        """The current channel if it can take requests now, without waiting. Raises if the
        client is closed or runs in another event loop (Lifetime.check)."""
        self.life.check()
        channel = self.channel
        return channel if channel is not None and channel.usable else None

    async def connected(self) -> Channel[R]:
        channel = self.open_channel()
        if channel is not None:
            return channel
        async with self._opening:
            if self.channel is None or not self.channel.usable:
                self.drop("reconnecting")
                endpoint = self.endpoints[self.current]
                self.channel = await self._pace.connect(
                    Channel.open(endpoint, self.identity, self.codec), format_address(endpoint)
                )
                self.life.track(self.channel.conn)
                self.life.check()  # it may have closed meanwhile
            return self.channel

    async def close(self) -> None:
        """Close the channel, and every connection of the client (see Lifetime)."""
        if self.life.loop in (None, asyncio.get_running_loop()):
            self.drop("client closed")  # its reader and watchdog belong to this loop
        await self.life.close()

    def drop(self, reason: str) -> None:
        if self.channel is not None:
            self.channel.close(reason)
            self.channel = None

    def move_on(self, failed: Channel[R] | None) -> None:
        """Go to the next endpoint not down, unless another request already left `failed`
        (the channel this one used: None if it could not connect)."""
        if failed is not self.channel:
            return
        now = asyncio.get_running_loop().time()
        if failed is None or failed.silent:  # it could not be reached, or went silent
            self._down[self.endpoints[self.current]] = now
        self.drop("trying another node")
        count = len(self.endpoints)
        nexts = [(self.current + step) % count for step in range(1, count + 1)]
        self.current = next((i for i in nexts if not self._is_down(i, now)), nexts[0])

    def _is_down(self, index: int, now: float) -> bool:
        down = self._down.get(self.endpoints[index])
        return down is not None and now - down < DOWN_S

    def go_to(self, address_text: str) -> bool:
        """Talk to the node at `address_text` from now on (the leader, as a node said); False
        (staying) if it is not an address or names a node that went silent in the last
        DOWN_S: the caller moves on instead."""
        try:
            address = parse_address(address_text)
        except ValueError:
            return False
        if address not in self.endpoints:
            self.endpoints.append(address)
        if self._is_down(self.endpoints.index(address), asyncio.get_running_loop().time()):
            return False
        if self.current != self.endpoints.index(address):
            self.drop("following the leader")
            self.current = self.endpoints.index(address)
        return True


def failure_at(endpoint: str, err: BaseException) -> str:
    """What went wrong with the node at `endpoint`, naming it once (a transport error names
    it already)."""
    text = str(err) or "timed out"
    return text if text.startswith(endpoint) else f"{endpoint}: {text}"


class EndpointsClient(Generic[R]):
    """What the KV and management clients share: `async with`, close(), and the node talked
    to now. A subclass sets `_link`, then calls `_close_when_dropped`."""

    _link: Endpoints[R]

    def _close_when_dropped(self) -> None:
        """Close the client's channel if the client is garbage-collected unclosed: its
        reader task holds it, so its connection (a UDP socket, keepalives) and the task
        would last as long as the event loop."""
        weakref.finalize(self, _drop_unclosed, self._link, type(self).__name__)

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
        """Close the client: its connections (and its subscriptions) end, and it is over in
        at most a second. Calls made after it raise; closing twice is harmless."""
        await self._link.close()


def _drop_unclosed(link: Endpoints[Any], kind: str) -> None:
    """A client's finalizer: close its channel in its loop, with a ResourceWarning as for an
    unclosed file. Its subscriptions are left to run: each keeps its own connection and ends
    with its `async for` (`async for e in connect(...).events()` holds no client)."""
    loop = link.life.loop
    if link.life.closed or link.channel is None or loop is None or loop.is_closed():
        return
    # Always on a later turn of its loop: the collector may run anywhere, in the middle of
    # this connection's own packet processing too, or in another thread.
    try:
        loop.call_soon_threadsafe(link.drop, "client dropped unclosed")
    except RuntimeError:  # its loop closed meanwhile (another thread): nothing left to close
        return
    where = ",".join(format_address(a) for a in link.endpoints)
    warnings.warn(
        f"unclosed quicraft {kind} of {where}: close it, or use `async with`",
        ResourceWarning,
        stacklevel=1,
    )
