"""State machines: the protocol a replicated application implements, and the built-in store.

Exceptions:

    ValueError
    └── CommandError    a command that is not well formed (build_command, encode_command,
                        decode_command)

`KVStore.restore` raises a plain ValueError for a bad snapshot. `apply` never raises for the
bytes it is given: a malformed command is a no-op whose result is a bad_request error.
"""

from .base import (
    Result,
    StateMachine,
    error_result,
    is_error,
    snapshot_encoder,
    snapshot_installer,
)
from .commands import (
    ADDRESS_OP,
    FOUND_OP,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    OPS,
    WRITE_OPS,
    Command,
    CommandError,
    build_command,
    checked_command,
    decode_command,
    encode_command,
)
from .kv import KVChange, KVStore
from .sessions import (
    DEFAULT_MAX_RESULTS,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_SESSION_TIMEOUT_MS,
    Session,
    SessionTable,
)
from .snapshot import with_new_cluster_id

__all__ = [
    "ADDRESS_OP",
    "DEFAULT_MAX_RESULTS",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_SESSION_TIMEOUT_MS",
    "FOUND_OP",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "OPS",
    "WRITE_OPS",
    "Command",
    "CommandError",
    "KVChange",
    "KVStore",
    "Result",
    "Session",
    "SessionTable",
    "StateMachine",
    "build_command",
    "checked_command",
    "decode_command",
    "encode_command",
    "error_result",
    "is_error",
    "snapshot_encoder",
    "snapshot_installer",
    "with_new_cluster_id",
]
