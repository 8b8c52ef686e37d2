"""The one exception of the wire layer.

Every decoder in quicraft.wire turns malformed input — bad framing, bad CBOR, a wrong type, a
value out of bounds, an unknown version — into ProtocolError and nothing else, so a handler needs
exactly one ``except`` to refuse a bad peer. The client-protocol, snapshot-chunk and frame
encoders raise it too when asked to send what the other side would refuse, so a bad value fails
at its sender; encode_message trusts the core's values (it is the hot path) and checks only "tp".
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Input that does not follow the wire protocol; the message says what and where."""
