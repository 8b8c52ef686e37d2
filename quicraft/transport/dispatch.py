"""StreamTable: the streams of one connection, and the handler tasks of peer-opened ones.

It is the StreamLink every Stream of the connection talks to (send, reset, flow state), and it
routes aioquic's stream events to the right Stream. Rules:

- Only an authenticated connection has a table that dispatches: the protocol feeds it events
  only after verification (connection.py), and sets `handler` and `connection` before that.
- A stream the peer opens gets one task running `handler(connection, stream)`; when the handler
  returns the stream is ended, when it raises the stream is reset (INTERNAL, or PROTOCOL for a
  ProtocolError) and the error logged. A connection with no handler resets peer streams.
- Ids of streams the peer opened are remembered (SeenStreams), so late packets for finished
  ones never start a new handler (aioquic keeps a similar set itself).
- Writes of one loop turn are held here and given to aioquic in one call per stream just before
  the connection transmits (`flush`): aioquic's bookkeeping costs a few microseconds per call,
  and a leader answering 64 requests made 64 calls. Held bytes count as unacknowledged, and
  `abort` flushes first, so that a stream stopped only for reading still sends them.
- It is the connection's ReadCredit (_aioquic_private, 11.): the peer is granted credit by
  what the streams' readers took, so what waits unread stays within the receive windows
  (stream.receive_windows): a window per stream, and one for the connection's whole frames.
  Once a reader takes a frame a transmit is due, which grants more if half a window was
  taken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aioquic.quic import events
from aioquic.quic.connection import QuicConnection

from quicraft.wire.errors import ProtocolError

from . import _aioquic_private as private
from .errors import ErrorCode, TransportError
from .stream import Stream, receive_windows

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger("quicraft.transport")

Handler = Callable[["Connection", Stream], Awaitable[None]]
StreamEvent = events.StreamDataReceived | events.StreamReset | events.StopSendingReceived


class SeenStreams:
    """The stream ids a connection has seen, in memory that does not grow with their number.

    A peer opens the streams of each of the four types in order (RFC 9000 §2.1: ids of a type
    are 4 apart, and using one opens those below it), so all seen ids of a type but those that
    arrived ahead of a lower one are below a floor. Those ahead are few: the peer may not open
    more than the stream limit beyond the lowest id not seen yet.
    """

    def __init__(self) -> None:
        self._floors = [0, 1, 2, 3]  # per type (id % 4): every id below it was seen
        self._ahead: set[int] = set()  # seen ids at or above their type's floor

    def __contains__(self, stream_id: int) -> bool:
        return stream_id < self._floors[stream_id & 3] or stream_id in self._ahead

    def add(self, stream_id: int) -> None:
        kind = stream_id & 3
        if stream_id < self._floors[kind]:
            return
        self._ahead.add(stream_id)
        while self._floors[kind] in self._ahead:
            self._ahead.remove(self._floors[kind])
            self._floors[kind] += 4

    def __len__(self) -> int:
        """Ids kept one by one (the rest are below the floors)."""
        return len(self._ahead)


class StreamTable:
    def __init__(
        self,
        quic: QuicConnection,
        *,
        dialer: bool,
        max_frame: int,
        transmit: Callable[[], None],
        failure: Callable[[], TransportError | None],
    ) -> None:
        self._quic = quic
        self._dialer = dialer
        self._max_frame = max_frame
        self.stream_window, self.connection_window = receive_windows(max_frame)
        self._transmit = transmit
        self._failure = failure
        self._loop = asyncio.get_running_loop()
        self._live: dict[int, Stream] = {}
        self._seen = SeenStreams()  # ids the peer opened, finished or not
        self._tasks: set[asyncio.Task[None]] = set()
        self._progress: asyncio.Future[None] | None = None
        self._send_handle: asyncio.Handle | None = None
        #: Stream id -> frames written this loop turn and not yet given to aioquic (in order),
        #: their size, and whether the last of them ends the stream.
        self._held: dict[int, list[bytes]] = {}
        self._held_size: dict[int, int] = {}
        self._held_end: set[int] = set()
        #: Stream data was written since the last transmit (so an owed ACK can ride with it).
        self.wrote = False
        self.connection: Connection | None = None
        self.handler: Handler | None = None

    def open(self) -> Stream:
        failure = self._failure()
        if failure is not None:
            raise failure
        stream_id = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(stream_id, b"")  # claims the id: aioquic advances on use
        stream = self._live[stream_id] = Stream(self, stream_id, self._max_frame)
        return stream

    def dispatch(self, event: StreamEvent) -> None:
        stream = self._live.get(event.stream_id)
        if isinstance(event, events.StreamDataReceived):
            stream = stream or self._accept(event.stream_id)
            if stream is not None:
                stream._deliver(event.data, event.end_stream)
        elif stream is not None and isinstance(event, events.StreamReset):
            stream._reset_by_peer(event.error_code)
        elif stream is not None:
            stream._stopped_by_peer(event.error_code)

    def transmitted(self) -> None:
        """The protocol just sent what it could: writers waiting in drain() may look again."""
        self._send_handle = None
        self.wrote = False
        waiter, self._progress = self._progress, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, error: TransportError) -> None:
        for stream in list(self._live.values()):
            stream._connection_lost(error)
        self.transmitted()

    def cancel_handlers(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def transmit_soon(self) -> None:
        """Transmit at the end of this event-loop turn: the writes of one turn, and the
        acknowledgements of what it received, share one transmit."""
        if self._send_handle is None:
            self._send_handle = self._loop.call_soon(self._transmit)

    # -- StreamLink -----------------------------------------------------------------------------

    def send(self, stream_id: int, data: bytes, end: bool) -> None:
        held = self._held.get(stream_id)
        if held is None:
            self._held[stream_id] = [data]
            self._held_size[stream_id] = len(data)
        else:
            held.append(data)
            self._held_size[stream_id] += len(data)
        if end:
            self._held_end.add(stream_id)
        self.wrote = True
        self.transmit_soon()

    def reader_took(self) -> None:
        self.transmit_soon()  # nothing_to_send skips it unless credit is due

    def flush(self) -> None:
        """Give aioquic what was written since the last flush, one call per stream."""
        if not self._held:
            return
        held, self._held = self._held, {}
        ending, self._held_end = self._held_end, set()
        self._held_size.clear()
        for stream_id, chunks in held.items():
            data = b"".join(chunks)  # one chunk: CPython returns it as it is, no copy
            try:
                self._quic.send_stream_data(stream_id, data, end_stream=stream_id in ending)
            except (ValueError, RuntimeError) as err:  # aioquic: the stream is finished or reset
                stream = self._live.get(stream_id)
                if stream is not None:
                    error = TransportError(f"cannot write on stream {stream_id}: {err}")
                    stream._fail_writes(error)

    def abort(self, stream_id: int, code: ErrorCode, *, reading: bool, writing: bool) -> None:
        self.flush()
        try:
            if writing:
                self._quic.reset_stream(stream_id, code)
            if reading:
                self._quic.stop_stream(stream_id, code)
        except ValueError:
            pass  # aioquic already forgot the stream: nothing is left to stop
        self.transmit_soon()

    def unacked(self, stream_id: int) -> int:
        return private.unacked_bytes(self._quic, stream_id) + self._held_size.get(stream_id, 0)

    async def progress(self) -> None:
        if self._failure() is not None:
            return
        if self._progress is None:
            self._progress = self._loop.create_future()
        await asyncio.shield(self._progress)  # one drainer's cancellation must not hit others

    def release(self, stream: Stream) -> None:
        self._live.pop(stream.stream_id, None)

    def failure(self) -> TransportError | None:
        return self._failure()

    # -- ReadCredit -----------------------------------------------------------------------------

    def taken(self, stream_id: int) -> int | None:
        stream = self._live.get(stream_id)
        return stream.taken if stream is not None and stream.reading else None

    def waiting(self) -> int:
        return sum(stream.waiting for stream in self._live.values())

    # -- private --------------------------------------------------------------------------------

    def _accept(self, stream_id: int) -> Stream | None:
        client_opened = stream_id & 1 == 0
        if stream_id in self._seen or client_opened == self._dialer:
            return None  # late data for a stream we are done with, or an id that is ours
        self._seen.add(stream_id)
        unidirectional = bool(stream_id & 2)  # quicraft uses none
        closing = self._failure() is not None
        if self.handler is None or self.connection is None or unidirectional or closing:
            self.abort(stream_id, ErrorCode.NO_HANDLER, reading=True, writing=not unidirectional)
            return None
        stream = self._live[stream_id] = Stream(self, stream_id, self._max_frame)
        task = self._loop.create_task(self._serve(self.handler, self.connection, stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return stream

    async def _serve(self, handler: Handler, conn: Connection, stream: Stream) -> None:
        try:
            await handler(conn, stream)
        except asyncio.CancelledError:
            stream._abort(ErrorCode.INTERNAL)
            raise
        except (ProtocolError, TransportError) as err:
            log.info("stream %d from %s ended: %s", stream.stream_id, conn.peer.name, err)
            code = ErrorCode.PROTOCOL if isinstance(err, ProtocolError) else ErrorCode.INTERNAL
            stream._abort(code)
        except Exception:
            log.exception("%s handler failed on a stream from %s", conn.alpn, conn.peer.name)
            stream._abort(ErrorCode.INTERNAL)
        else:
            stream._handler_done()
