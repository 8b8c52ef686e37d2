"""EventFeed: what a node observes, turned into journal events (events.py says where they sit).

Rules:
- Replicated events come from applied entries only, so every node derives the same ones:
  a kv change from the key-value store's observer (its revision, value after and before, and
  the leader's timestamp as at_ms); leader_changed from a leader's no-op entry, which names
  it (core: _become_leader); member_added / _promoted / _removed from a configuration entry
  that changed the membership the feed tracks from the snapshot on. `previous` of
  leader_changed is the leader of the previous no-op this node applied (null if it applied
  none since it started or installed a snapshot).
- Node-local events come from the runtime's soft state (term_changed, then role_changed) and
  from its snapshots (snapshot_created, snapshot_installed). The discovery and forming code
  records node_discovered / node_lost / cluster_split_detected with `local`.
- Everything here runs on the runtime's loop in the apply path: a few dict builds per entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quicraft.core import (
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryType,
    Membership,
    NodeId,
    Role,
    Snapshot,
    SoftState,
)
from quicraft.statemachine import KVChange, KVStore

from .events import EventJournal
from .runtime import RaftNode

MAX_NODE_ID = 128  # wire/schema: an id is 1 to 128 characters
_ROLES = {
    Role.FOLLOWER: "follower",
    Role.PRE_CANDIDATE: "pre_candidate",
    Role.CANDIDATE: "candidate",
    Role.LEADER: "leader",
}


class EventFeed:
    def __init__(
        self, journal: EventJournal, node_id: NodeId, address_of: Callable[[NodeId], str | None]
    ) -> None:
        self.journal = journal
        self.id = node_id
        self._address_of = address_of
        self._raft: RaftNode | None = None
        self._membership = Membership()
        self._leader: NodeId | None = None  # named by the last no-op applied
        self._soft: SoftState | None = None

    def attach(self, raft: RaftNode, kv: KVStore) -> None:
        """Listen to `raft` and `kv` (before raft.open: replayed entries count too)."""
        self._raft = raft
        kv.observer = self._kv_changed
        raft.on_applied = self._applied
        raft.on_snapshot = self._snapshot
        chained = raft.on_soft_state

        def soft_state(soft: SoftState) -> None:
            if chained is not None:
                chained(soft)
            self._soft_state(soft)

        raft.on_soft_state = soft_state

    def opened(self) -> None:
        """raft.open() is done: the journal starts at its snapshot."""
        if self._raft is None or self._raft.core is None:
            raise RuntimeError("attach() and open the node first")
        snapshot = self._raft.core.log.snapshot
        self._membership = snapshot.meta.membership
        self.journal.start(snapshot.meta.index)

    def local(self, kind: str, data: dict[str, Any]) -> None:
        """A node-local event (discovery, forming)."""
        self.journal.record_local(kind, data)

    # -- replicated ---------------------------------------------------------------------------

    def _kv_changed(self, change: KVChange) -> None:
        # The event's fields as the journal holds them, flat: no map per applied write.
        fields = (
            "op", change.op, "key", change.key, "revision", change.revision,
            "value", change.value, "previous", change.previous,
        )  # fmt: skip
        size = len(change.key) + _length(change.value) + _length(change.previous)
        self.journal.record_fields(change.revision, "kv", change.ts_ms, fields, size)

    def _applied(self, entry: Entry) -> None:
        if entry.type is EntryType.NOOP:
            leader = _node_id(entry.data)
            data = {"term": entry.term, "leader": leader, "previous": self._leader}
            self._leader = leader
            self.journal.record_log(entry.index, "leader_changed", data)
        elif entry.type is EntryType.CONF_CHANGE:
            self._conf_change(entry)
        self.journal.advance(entry.index)

    def _conf_change(self, entry: Entry) -> None:
        try:
            change = ConfChange.decode(entry.data)
            after = change.apply_to(self._membership)
        except (ValueError, KeyError, TypeError):
            return  # a change that changed nothing (core.types.membership_of): no event
        self._membership = after
        node = change.node
        if change.kind is ConfChangeKind.PROMOTE:
            self.journal.record_log(entry.index, "member_promoted", {"node": node})
        elif change.kind is ConfChangeKind.REMOVE:
            self.journal.record_log(entry.index, "member_removed", {"node": node})
        else:
            voter = change.kind is ConfChangeKind.ADD_VOTER
            data = {"node": node, "address": self._address_of(node), "voter": voter}
            self.journal.record_log(entry.index, "member_added", data)

    # -- node-local ---------------------------------------------------------------------------

    def _soft_state(self, soft: SoftState) -> None:
        before = self._soft
        self._soft = soft
        if before is None or soft.term != before.term:
            self.journal.record_local("term_changed", {"term": soft.term})
        if before is None or soft.role is not before.role:
            role = _ROLES[soft.role]
            core = self._raft.core if self._raft is not None else None
            if soft.role is Role.FOLLOWER and core and self.id in core.membership.learners:
                role = "learner"
            self.journal.record_local(
                "role_changed", {"node": self.id, "role": role, "term": soft.term}
            )

    def _snapshot(self, snapshot: Snapshot, installed: bool) -> None:
        meta = snapshot.meta
        if installed:
            self.journal.snapshot_installed(meta.index)
            self._membership = meta.membership
            self._leader = None  # the no-ops it covers were never applied here
        kind = "snapshot_installed" if installed else "snapshot_created"
        data = {"index": meta.index, "term": meta.term, "size": len(snapshot.data)}
        self.journal.record_local(kind, data)


def _length(value: bytes | int | None) -> int:
    return len(value) if isinstance(value, bytes) else 0


def _node_id(data: bytes) -> NodeId | None:
    """The leader a no-op names; None for a no-op written before they named one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if 1 <= len(text) <= MAX_NODE_ID else None
