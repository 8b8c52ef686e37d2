"""Framing: how messages are cut out of a byte stream (a QUIC stream).

A frame is a 4-byte big-endian payload length followed by that many payload bytes. Rules:

- The limit is checked on the length prefix, before a byte of the payload is buffered, so a peer
  cannot make us hold more than `max_frame` (+ 3) bytes of an unfinished frame.
- Empty payloads are valid frames (the codecs above reject them as messages).
- After a ProtocolError the decoder is spent: the stream is out of step and every later call
  raises the same error, so a caller cannot resume in the middle of garbage by mistake.
- A stream may only end between frames: `eof()` says whether it ended inside one.
"""

from __future__ import annotations

from .errors import ProtocolError

HEADER_SIZE = 4
#: Default and hard upper bound of a frame's payload (a snapshot chunk fits with room to spare).
MAX_FRAME = 16 * 1024 * 1024
_LENGTH_LIMIT = (1 << 32) - 1


def encode_frame(payload: bytes, *, max_frame: int = MAX_FRAME) -> bytes:
    """The frame carrying `payload`; ProtocolError if a peer with the same limit would refuse it."""
    size = len(payload)
    if size > max_frame or size > _LENGTH_LIMIT:
        raise ProtocolError(f"frame payload of {size} bytes exceeds the limit of {max_frame}")
    return size.to_bytes(HEADER_SIZE, "big") + payload


class FrameDecoder:
    """Feed it stream bytes as they arrive; it hands back each complete payload once."""

    __slots__ = ("_buffer", "_error", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        if not 0 <= max_frame <= _LENGTH_LIMIT:
            raise ValueError(f"max_frame must be within 0..{_LENGTH_LIMIT}")
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held of a frame not yet complete (0 exactly when the stream is between frames)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Append `data`; return the payloads it completed, in order (possibly none)."""
        if self._error is not None:
            raise self._error
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        pos, end = 0, len(buf)
        too_big = -1
        # Parse by offset through a view and trim the buffer once at the end: one copy per
        # payload, no quadratic re-slicing when many small frames arrive in one read.
        with memoryview(buf) as view:
            while end - pos >= HEADER_SIZE:
                size = int.from_bytes(view[pos : pos + HEADER_SIZE], "big")
                if size > self.max_frame:
                    too_big = size
                    break
                start = pos + HEADER_SIZE
                if end - start < size:
                    break
                frames.append(bytes(view[start : start + size]))
                pos = start + size
        if too_big >= 0:
            buf.clear()
            self._error = ProtocolError(
                f"frame of {too_big} bytes exceeds the limit of {self.max_frame}"
            )
            raise self._error
        if pos:
            del buf[:pos]
        return frames

    def eof(self) -> None:
        """The stream ended: ProtocolError if it ended inside a frame."""
        if self._error is not None:
            raise self._error
        if self._buffer:
            self._error = ProtocolError(
                f"stream ended inside a frame ({len(self._buffer)} bytes of it received)"
            )
            raise self._error
