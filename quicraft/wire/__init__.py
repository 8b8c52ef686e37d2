"""quicraft.wire: every message that crosses a process, as length-prefixed frames of CBOR maps.

Modules (private; the public API is what this package exports):

    frame     4-byte big-endian length + payload; FrameDecoder bounds the length
    raft      core.Message <-> CBOR map (quicraft-raft/1), snapshot data inline
    snapshot  a large snapshot as a header frame and chunk frames on a stream of its own
    hello     what a node says about itself (address, formed, cluster id) on a Raft connection
    client    requests and responses of the key-value protocol (quicraft-client/1)
    ops       what each of that protocol's ops takes and returns
    mgmt      requests and responses of the management protocol (quicraft-mgmt/1), its op tables
    schema    Field and Schema, the checked maps of mgmt, events and backup, and the field types
              they share
    events    subscriptions, events and their end (quicraft-events/1), the per-kind field table
    backup    the frames of a mgmt backup answer, and the backup file format
    fields    bounded CBOR decoding and the strict typed checks the codecs share
    errors    ProtocolError

Every message is a CBOR map with a version ("v": 1) and an optional W3C traceparent ("tp").
Every decoder checks every type and bound, and turns all malformed input into ProtocolError:

    Exception
    └── ProtocolError    bad framing, bad CBOR, wrong type, out of bounds, unknown version
        ├── BadRequest   a client request whose id is known: answer it, keep the stream
        └── BackupError  a backup file that is foreign, truncated, corrupted or too long
"""

from .backup import (
    BACKUP_CHUNK,
    BackupError,
    BackupInfo,
    BackupReader,
    BackupReceiver,
    BackupSender,
    BackupTrailer,
    BackupWriter,
    backup_frames,
    backup_info,
    decode_backup_frame,
    encode_backup_chunk,
    encode_backup_trailer,
    verify_backup,
    write_backup,
)
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
from .events import (
    END_CODES,
    EVENT_KINDS,
    EVENTS,
    Event,
    EventFrame,
    EventProgress,
    EventStreamEnd,
    EventStreamReader,
    Subscription,
    decode_end,
    decode_event,
    decode_event_frame,
    decode_subscribe,
    encode_end,
    encode_event,
    encode_progress,
    encode_subscribe,
)
from .fields import MAX_NODE_ID, VERSION
from .frame import MAX_FRAME, FrameDecoder, encode_frame
from .hello import Hello, decode_hello, encode_hello, peek_hello
from .mgmt import (
    MEMBER_ROLES,
    MGMT_ERROR_CODES,
    MGMT_OPS,
    MgmtErrorInfo,
    MgmtRequest,
    MgmtResponse,
    decode_mgmt_request,
    decode_mgmt_response,
    encode_mgmt_request,
    encode_mgmt_response,
)
from .ops import MAX_KEY, MAX_VALUE, OPS, keys_refusal
from .raft import RaftEnvelope, decode_envelope, decode_message, encode_message
from .schema import NODE_ROLES
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
    "BACKUP_CHUNK",
    "CHUNK_SIZE",
    "END_CODES",
    "ERROR_CODES",
    "EVENTS",
    "EVENT_KINDS",
    "MAX_FRAME",
    "MAX_KEY",
    "MAX_NODE_ID",
    "MAX_SNAPSHOT",
    "MAX_VALUE",
    "MEMBER_ROLES",
    "MGMT_ERROR_CODES",
    "MGMT_OPS",
    "NODE_ROLES",
    "OPS",
    "VERSION",
    "BackupError",
    "BackupInfo",
    "BackupReader",
    "BackupReceiver",
    "BackupSender",
    "BackupTrailer",
    "BackupWriter",
    "BadRequest",
    "ErrorInfo",
    "Event",
    "EventFrame",
    "EventProgress",
    "EventStreamEnd",
    "EventStreamReader",
    "FrameDecoder",
    "Hello",
    "MgmtErrorInfo",
    "MgmtRequest",
    "MgmtResponse",
    "ProtocolError",
    "RaftEnvelope",
    "Request",
    "Response",
    "SnapshotAssembler",
    "Subscription",
    "backup_frames",
    "backup_info",
    "decode_backup_frame",
    "decode_end",
    "decode_envelope",
    "decode_event",
    "decode_event_frame",
    "decode_hello",
    "decode_message",
    "decode_mgmt_request",
    "decode_mgmt_response",
    "decode_request",
    "decode_response",
    "decode_snapshot_chunk",
    "decode_subscribe",
    "encode_backup_chunk",
    "encode_backup_trailer",
    "encode_end",
    "encode_event",
    "encode_frame",
    "encode_hello",
    "encode_message",
    "encode_mgmt_request",
    "encode_mgmt_response",
    "encode_progress",
    "encode_request",
    "encode_response",
    "encode_snapshot_chunk",
    "encode_snapshot_header",
    "encode_subscribe",
    "keys_refusal",
    "peek_hello",
    "snapshot_frames",
    "verify_backup",
    "write_backup",
]
