"""The Ready batch: everything the runtime must do for the core, and in which order.

The contract, for a runtime that holds a core `raft`:

    while True:
        feed raft.tick() / raft.step(msg) / raft.propose(...) / raft.read_index(...)
        if raft.has_ready():
            rd = raft.ready()
            1. send rd.messages                 (may go at once, before or while persisting)
            2. persist, atomically and durably:  rd.snapshot (if any), then rd.entries
               (replacing any stored entries with index >= rd.entries[0].index), then
               rd.hard_state (if any)
            3. send rd.persisted_messages        (only now: they promise what step 2 stored)
            4. install rd.snapshot into the state machine (if any), then apply
               rd.committed_entries in order
            5. serve rd.read_states once the state machine has applied their index
            6. raft.advance(rd)

Two duties come with sending: for every SNAPSHOT message, report how its transfer ended with
`raft.report_snapshot(peer, ok)` (until then the leader sends that follower nothing more), and
report a peer that cannot be reached with `raft.report_unreachable(peer)`.

`ready()` may not be called again before `advance()`. Steps 1 and 2 may overlap: only the
leader puts messages in `messages`, never in a Ready that changes the term or vote (no message
carries a term that is not yet durable), and its own entries count towards a commit only after
`advance()` reports them durable, so it can write its log while followers write theirs.

Two liberties the contract allows (the runtime takes both): the commit index is volatile state
in Raft, so a hard state that differs from the stored one only in `commit` need not be written
at all; and committed entries that were already durable before this Ready (index at most
`log.stable` when ready() returned) may be applied before step 2, as they need nothing from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import Entry, HardState, Message, ReadState, Snapshot, SoftState


@dataclass(slots=True)
class Ready:
    #: Leader, role and term, when any changed since the last Ready. Not persisted.
    soft_state: SoftState | None = None
    #: Term, vote and commit to persist, when any changed since the last Ready.
    hard_state: HardState | None = None
    #: A snapshot received from the leader: persist it, then restore the state machine from it.
    snapshot: Snapshot | None = None
    #: Entries to append to stable storage; they may overwrite a stored suffix.
    entries: list[Entry] = field(default_factory=list)
    #: Messages that may be sent at once (the leader's appends and heartbeats).
    messages: list[Message] = field(default_factory=list)
    #: Messages to send only after snapshot, entries and hard state are durable.
    persisted_messages: list[Message] = field(default_factory=list)
    #: Committed entries to apply to the state machine, in order, after persisting.
    committed_entries: list[Entry] = field(default_factory=list)
    #: Reads confirmed by a quorum: serve each once its index is applied.
    read_states: list[ReadState] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (
            self.soft_state
            or self.hard_state
            or self.snapshot
            or self.entries
            or self.messages
            or self.persisted_messages
            or self.committed_entries
            or self.read_states
        )
