"""Sans-IO Raft: no sockets, clocks, files or threads; see docs/core.md.

Exceptions:

    RaftError            a request the core cannot take
    ├── NotLeader        sent to a non-leader; carries the leader hint
    └── ProposalDropped  the leader cannot take it now (transfer, pending change)
"""

from .config import DELIBERATE_BUGS, Config
from .raft import (
    NotLeader,
    PersistentState,
    ProposalDropped,
    RaftCore,
    RaftError,
    bootstrap_state,
)
from .ready import Ready
from .types import (
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryType,
    HardState,
    Membership,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

__all__ = [
    "DELIBERATE_BUGS",
    "ConfChange",
    "ConfChangeKind",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "Membership",
    "Message",
    "MessageType",
    "NodeId",
    "NotLeader",
    "PersistentState",
    "ProposalDropped",
    "RaftCore",
    "RaftError",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "bootstrap_state",
]
