"""Stream: one bidirectional QUIC stream carrying wire frames, as an asyncio object.

The connection (connection.py) feeds received bytes in with `_deliver` and owns the QUIC state;
a Stream keeps the frames decoded so far and the state of each direction. Rules:

- Received bytes are decoded as they arrive (FrameDecoder), so a bad length prefix is caught
  before its payload is buffered. A framing error ends only this stream: both directions are
  reset with ErrorCode.PROTOCOL and `read_frame` raises the ProtocolError; the connection lives.
- `read_frame` returns None only at a clean end (FIN between frames); a peer reset or a lost
  connection raises TransportError instead, so a handler can tell "done" from "cut off".
- Writes never block: `write_frame` buffers (in the link until the loop turn's transmit,
  then in aioquic), `drain` waits until little enough is unacknowledged (or, after `end`,
  until all of it is).
- Backpressure is QUIC flow control paced by reading: the peer may send only `receive_windows`
  beyond what `read_frame` has taken (the link grants more as it takes), so a handler that
  does not read holds its peer's writer back in `drain` instead of buffering without bound.
- When both directions are done the stream tells its link, which forgets it. A handler's
  stream is done when the handler returns; a stream we opened, once it was read to its end
  (or failed) and ended, or once `abort` gave it up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from quicraft.wire.errors import ProtocolError
from quicraft.wire.frame import HEADER_SIZE, FrameDecoder, encode_frame

from .errors import ErrorCode, TransportError

#: drain() returns once at most this much written data awaits acknowledgement.
DRAIN_LOW_WATER = 1024 * 1024


def receive_windows(max_frame: int) -> tuple[int, int]:
    """How far (bytes) a peer may send beyond what our readers took: per stream, and per
    connection in whole frames not read yet (dispatch.py).

    Credit is granted once half a window has been taken, so half a stream's window must hold
    a whole frame: a reader that took every whole frame has then always freed enough for more
    credit, and a frame cut by the window always completes. The connection's window leaves
    unfinished frames out for the same reason: the peer's streams may each have one under
    way, and none would finish if they shared a window they had filled."""
    stream = 2 * (max_frame + HEADER_SIZE)
    return stream, 2 * stream


class StreamLink(Protocol):
    """What a Stream needs from its connection."""

    def send(self, stream_id: int, data: bytes, end: bool) -> None: ...
    def reader_took(self) -> None: ...  # flow-control credit may be due (a transmit sends it)
    def abort(self, stream_id: int, code: ErrorCode, *, reading: bool, writing: bool) -> None: ...
    def unacked(self, stream_id: int) -> int: ...
    async def progress(self) -> None: ...  # returns after the next transmit or on close
    def release(self, stream: Stream) -> None: ...
    def failure(self) -> TransportError | None: ...  # set once the connection is closing


class Stream:
    """A bidirectional QUIC stream carrying length-prefixed frames."""

    def __init__(self, link: StreamLink, stream_id: int, max_frame: int) -> None:
        self._link = link
        self._id = stream_id
        self._decoder = FrameDecoder(max_frame)
        self._frames: deque[bytes] = deque()
        self._read_error: Exception | None = None
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._write_error: TransportError | None = None
        self._ended = False
        #: Bytes the connection delivered, and how many of them read_frame handed out (frame
        #: headers included): the difference is held here, and bounds the peer's credit.
        self.received = 0
        self.taken = 0

    @property
    def stream_id(self) -> int:
        return self._id

    @property
    def waiting(self) -> int:
        """Bytes of whole frames received and not read yet."""
        return self.received - self.taken - self._decoder.buffered

    @property
    def reading(self) -> bool:
        """Whether more may still arrive to be read (so the peer may be granted credit)."""
        return not self._eof and self._read_error is None

    # -- reading ------------------------------------------------------------------------------

    async def read_frame(self) -> bytes | None:
        """The next frame; None at the clean end of the stream; ProtocolError on bad framing."""
        while True:
            if self._frames:
                frame = self._frames.popleft()
                self.taken += HEADER_SIZE + len(frame)
                self._link.reader_took()
                return frame
            if self._read_error is not None:
                raise self._read_error
            if self._eof:
                return None
            if self._waiter is not None:
                raise RuntimeError("read_frame() is already being awaited on this stream")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    # -- writing ------------------------------------------------------------------------------

    def write_frame(self, payload: bytes) -> None:
        """Queue one frame; it is sent as flow control allows (see drain)."""
        self._check_writable()
        self._link.send(self._id, encode_frame(payload), False)

    async def drain(self) -> None:
        """Wait until little written data is unacknowledged; after end(), until none is."""
        limit = 0 if self._ended else DRAIN_LOW_WATER
        while self._link.unacked(self._id) > limit:
            self._raise_write_error()
            await self._link.progress()
        if not self._ended:  # once all is acknowledged, a later close changes nothing
            self._raise_write_error()

    def end(self) -> None:
        """Send FIN: we will write no more. Idempotent."""
        if self._ended or self._write_error is not None:
            return
        self._ended = True
        try:
            self._link.send(self._id, b"", True)
        except TransportError as err:  # aioquic already dropped the stream: drain() will say
            self._write_error = err
        self._maybe_release()

    def abort(self) -> None:
        """Give the stream up: reset our writes and ask the peer to stop sending (both with
        NO_ERROR). A stream that is dropped without reading it to its end or aborting it is
        never forgotten: what it holds unread keeps counting against the connection's flow
        control window (`receive_windows`), so two such streams can stall all the others.
        Frames not read yet are dropped. Idempotent."""
        self._frames.clear()
        self._abort(ErrorCode.NO_ERROR)

    # -- fed by the connection ----------------------------------------------------------------

    def _deliver(self, data: bytes, fin: bool) -> None:
        if not self.reading:
            return
        self.received += len(data)
        try:
            self._frames.extend(self._decoder.feed(data))
            if fin:
                self._decoder.eof()
                self._eof = True
        except ProtocolError as err:
            self._read_error = err
            writing = not self._ended and self._write_error is None
            self._fail_writes(TransportError(f"stream {self._id} reset: {err}"))
            self._link.abort(self._id, ErrorCode.PROTOCOL, reading=True, writing=writing)
        self._wake()
        self._maybe_release()

    def _reset_by_peer(self, code: int) -> None:
        if not self.reading:
            return
        self._read_error = TransportError(f"stream {self._id} reset by the peer (code {code})")
        self._wake()
        self._maybe_release()

    def _stopped_by_peer(self, code: int) -> None:
        # aioquic already resets our sending side when STOP_SENDING arrives
        self._fail_writes(TransportError(f"stream {self._id} stopped by the peer (code {code})"))
        self._maybe_release()

    def _abort(self, code: ErrorCode) -> None:
        """Reset whatever direction is still open (a handler failed or was cancelled)."""
        reading = self.reading
        writing = not self._ended and self._write_error is None
        if reading:
            self._read_error = TransportError(f"stream {self._id} aborted")
        self._fail_writes(TransportError(f"stream {self._id} aborted"))
        if reading or writing:
            self._link.abort(self._id, code, reading=reading, writing=writing)
        self._wake()
        self._maybe_release()

    def _handler_done(self) -> None:
        """The handler returned: end our side, and stop the peer's if it is still sending."""
        self.end()
        if self.reading:
            self._read_error = TransportError(f"stream {self._id} closed by its handler")
            self._link.abort(self._id, ErrorCode.NO_ERROR, reading=True, writing=False)
        self._maybe_release()

    def _connection_lost(self, error: TransportError) -> None:
        if self.reading:
            self._read_error = error
        self._fail_writes(error)
        self._wake()

    # -- private ------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._ended:
            raise TransportError(f"stream {self._id} was already ended")
        self._raise_write_error()

    def _raise_write_error(self) -> None:
        if self._write_error is not None:
            raise self._write_error
        failure = self._link.failure()
        if failure is not None:
            raise failure

    def _fail_writes(self, error: TransportError) -> None:
        if self._write_error is None and not (self._ended and self._link.unacked(self._id) == 0):
            self._write_error = error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _maybe_release(self) -> None:
        read_done = not self.reading
        write_done = self._ended or self._write_error is not None
        if read_done and write_done:
            self._link.release(self)
