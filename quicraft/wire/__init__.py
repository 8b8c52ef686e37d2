"""quicraft.wire: every message that crosses a process, as length-prefixed frames of CBOR maps.

Modules (private; the public API is what this package exports):

    frame     4-byte big-endian length + payload; FrameDecoder bounds the length
    raft      core.Message <-> CBOR map (quicraft-raft/1), snapshot data inline
    snapshot  a large snapshot as a header frame and chunk frames on a stream of its own
    client    requests and responses of the key-value protocol (quicraft-client/1)
    ops       what each of that protocol's ops takes and returns
    fields    bounded CBOR decoding and the strict typed checks the codecs share
    errors    ProtocolError

Every message is a CBOR map with a version ("v": 1) and an optional W3C traceparent ("tp").
Every decoder checks every type and bound, and turns all malformed input into ProtocolError:

    Exception
    └── ProtocolError    bad framing, bad CBOR, wrong type, out of bounds, unknown version
        └── BadRequest   a client request whose id is known: answer it, keep the stream
"""

from .client import (
    ERROR_CODES,
    BadRequest,
    ErrorInfo,
    Request,
    Response,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from .errors import ProtocolError
from .fields import MAX_NODE_ID, VERSION
from .frame import MAX_FRAME, FrameDecoder, encode_frame
from .ops import MAX_KEY, MAX_VALUE, OPS
from .raft import RaftEnvelope, decode_envelope, decode_message, encode_message
from .snapshot import (
    CHUNK_SIZE,
    MAX_SNAPSHOT,
    SnapshotAssembler,
    decode_snapshot_chunk,
    encode_snapshot_chunk,
    encode_snapshot_header,
    snapshot_frames,
)

__all__ = [
    "CHUNK_SIZE",
    "ERROR_CODES",
    "MAX_FRAME",
    "MAX_KEY",
    "MAX_NODE_ID",
    "MAX_SNAPSHOT",
    "MAX_VALUE",
    "OPS",
    "VERSION",
    "BadRequest",
    "ErrorInfo",
    "FrameDecoder",
    "ProtocolError",
    "RaftEnvelope",
    "Request",
    "Response",
    "SnapshotAssembler",
    "decode_envelope",
    "decode_message",
    "decode_request",
    "decode_response",
    "decode_snapshot_chunk",
    "encode_frame",
    "encode_message",
    "encode_request",
    "encode_response",
    "encode_snapshot_chunk",
    "encode_snapshot_header",
    "snapshot_frames",
]
