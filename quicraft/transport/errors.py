"""The exceptions of the transport and the application error codes it puts on the wire.

    TransportError      unreachable, timed out, connection or stream lost
    └── RefusedError    authentication or admission failed (either end refused the other)

IdentityError (identity.py) is separate: it is about files on this machine, not the network.
"""

from __future__ import annotations

import enum


class TransportError(Exception):
    """A connection could not be made or was lost; the message names the peer."""


class RefusedError(TransportError):
    """The peer refused us, or we refused it; `reason` is the short refusal code, `detail`
    what the refusing end said besides (verify.Refusal)."""

    def __init__(self, message: str, reason: str, detail: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.detail = detail


class ErrorCode(enum.IntEnum):
    """QUIC application error codes of quicraft connections and streams."""

    NO_ERROR = 0x0
    REFUSED = 0x1  # connection: the peer failed authentication or admission
    PROTOCOL = 0x2  # stream: malformed framing
    INTERNAL = 0x3  # stream: the handler failed
    NO_HANDLER = 0x4  # stream: nothing serves streams on this connection
