"""Value types of the Raft core: entries, states, membership, snapshots and messages.

Everything here is a plain value. Node ids are strings (in a real cluster, a fingerprint of the
node's public key). Entry payloads are opaque bytes to the core, except configuration changes,
which the core encodes itself with the standard library so that it needs no third-party code.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

NodeId = str

#: The term of "no entry": index 0 has term 0, so every log starts with a matching empty prefix.
NO_TERM = 0


class EntryType(enum.IntEnum):
    NORMAL = 0  #: an application command; `data` is opaque to the core
    NOOP = 1  #: appended by every new leader to commit an entry of its term (§5.4.2); data: its id
    CONF_CHANGE = 2  #: a membership change; `data` is an encoded ConfChange


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Bytes this entry counts for when batching messages."""
        return len(self.data) + 16


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it leaves the node."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting (events, status); never persisted."""

    leader: NodeId | None
    role: Role
    term: int


@dataclass(frozen=True, slots=True)
class Membership:
    """Voters decide elections and commits; learners only receive the log."""

    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()

    def __contains__(self, node: object) -> bool:
        return node in self.voters or node in self.learners

    def members(self) -> frozenset[NodeId]:
        return self.voters | self.learners


class ConfChangeKind(enum.Enum):
    ADD_LEARNER = "add_learner"
    ADD_VOTER = "add_voter"  #: founding members; prefer ADD_LEARNER then PROMOTE afterwards
    PROMOTE = "promote"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change. Changes are made one at a time (thesis §4.1)."""

    kind: ConfChangeKind
    node: NodeId

    def apply_to(self, membership: Membership) -> Membership:
        """The membership after this change; raises ValueError if it makes no sense there."""
        voters, learners = membership.voters, membership.learners
        if self.kind in (ConfChangeKind.ADD_LEARNER, ConfChangeKind.ADD_VOTER):
            if self.node in membership:
                raise ValueError(f"{self.node} is already a member")
            if self.kind is ConfChangeKind.ADD_VOTER:
                return Membership(voters | {self.node}, learners)
            return Membership(voters, learners | {self.node})
        if self.kind is ConfChangeKind.PROMOTE:
            if self.node not in learners:
                raise ValueError(f"{self.node} is not a learner")
            return Membership(voters | {self.node}, learners - {self.node})
        if self.node not in membership:
            raise ValueError(f"{self.node} is not a member")
        if membership.voters == {self.node}:
            raise ValueError("cannot remove the last voter")
        return Membership(voters - {self.node}, learners - {self.node})

    def encode(self) -> bytes:
        return json.dumps({"kind": self.kind.value, "node": self.node}).encode()

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        raw = json.loads(data)
        return cls(ConfChangeKind(raw["kind"]), str(raw["node"]))


def membership_of(entry: Entry, before: Membership) -> Membership:
    """The membership in effect once `entry` is in the log (changes take effect when appended).

    A change that does not apply (it cannot be produced by a correct leader) leaves the
    membership as it was, so a replayed log always yields the same membership everywhere.
    """
    try:
        return ConfChange.decode(entry.data).apply_to(before)
    except (ValueError, KeyError, TypeError):
        return before


def encode_membership(membership: Membership) -> bytes:
    return json.dumps(
        {"voters": sorted(membership.voters), "learners": sorted(membership.learners)}
    ).encode()


def decode_membership(data: bytes) -> Membership:
    raw = json.loads(data)
    return Membership(frozenset(raw["voters"]), frozenset(raw["learners"]))


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = NO_TERM
    membership: Membership = field(default_factory=Membership)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state machine image at `meta.index`. `data` is opaque to the core."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""


class MessageType(enum.Enum):
    APPEND = "append"
    APPEND_RESP = "append_resp"
    HEARTBEAT = "heartbeat"
    HEARTBEAT_RESP = "heartbeat_resp"
    PRE_VOTE = "pre_vote"
    PRE_VOTE_RESP = "pre_vote_resp"
    VOTE = "vote"
    VOTE_RESP = "vote_resp"
    SNAPSHOT = "snapshot"
    TIMEOUT_NOW = "timeout_now"
    READ_INDEX = "read_index"
    READ_INDEX_RESP = "read_index_resp"


@dataclass(slots=True)
class Message:
    """One Raft message. Which fields mean something depends on `type`:

    - APPEND: `index`/`log_term` name the entry before `entries`; `commit` is the leader's.
    - APPEND_RESP: `index` is the follower's last matching index on success; on `reject`,
      `index` echoes the rejected probe and `hint_index`/`hint_term` say where to retry
      (the follower's first index of the conflicting term, or its last index + 1).
    - HEARTBEAT(_RESP): `commit` bounded by what the follower is known to have; `read_round`
      numbers the ReadIndex round the heartbeat confirms leadership for.
    - (PRE_)VOTE: `index`/`log_term` are the candidate's last entry; `transfer` marks a campaign
      started by TimeoutNow, which may override the leader lease.
    - SNAPSHOT: `snapshot` to install.
    - READ_INDEX(_RESP): `context` identifies the read; the response's `index` is the read index.
    """

    type: MessageType
    to: NodeId
    frm: NodeId
    term: int
    log_term: int = NO_TERM
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = NO_TERM
    read_round: int = 0
    transfer: bool = False
    context: bytes = b""
    snapshot: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read identified by `context` is linearizable once the state machine has applied `index`."""

    context: bytes
    index: int
