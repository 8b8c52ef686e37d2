"""A deterministic in-process network of Raft cores for tests: no threads, clock or I/O.

Every node is driven as ready.py asks: `messages` are queued at once; snapshot, entries and hard
state are copied into the node's durable state; then `persisted_messages` are queued, committed
entries applied, read states recorded and the Ready advanced. A crash throws the core away and
drops its messages; a restart rebuilds it from what was durable. Messages move only when a test
says so (`deliver`), so a test decides exactly which message arrives when.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Collection, Iterable
from typing import Any

from quicraft.core import (
    Config,
    Entry,
    Message,
    MessageType,
    NodeId,
    PersistentState,
    RaftCore,
    ReadState,
    Ready,
    Role,
    Snapshot,
    bootstrap_state,
)

ELECTION = frozenset(
    {MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP, MessageType.VOTE, MessageType.VOTE_RESP}
)
#: The paper's Raft: no PreVote, no CheckQuorum (thesis §9.6 and §6.2 are extensions).
PAPER: dict[str, Any] = {"pre_vote": False, "check_quorum": False}

Types = MessageType | Collection[MessageType] | None
Nodes = NodeId | Collection[NodeId] | None


def _has(want: MessageType | NodeId | Collection[object] | None, value: object) -> bool:
    if want is None:
        return True
    if isinstance(want, MessageType | str):
        return value == want
    return value in want


class Network:
    """Nodes `ids`, each started from `states[id]` (default: the bootstrap state of `ids`) with
    `Config(id, **config)` and its own seeded random generator."""

    def __init__(
        self,
        ids: Iterable[NodeId],
        *,
        seed: int = 0,
        states: dict[NodeId, PersistentState] | None = None,
        **config: Any,
    ):
        self.ids = list(ids)
        self.seed = seed
        self.config = config
        self.cores: dict[NodeId, RaftCore] = {}  # live nodes only
        self.durable: dict[NodeId, PersistentState] = {}
        self.applied: dict[NodeId, dict[int, Entry]] = defaultdict(dict)
        self.applied_index: dict[NodeId, int] = defaultdict(int)
        self.installed: dict[NodeId, list[Snapshot]] = defaultdict(list)
        self.read_states: dict[NodeId, list[ReadState]] = defaultdict(list)
        self.pending: list[Message] = []
        self.sent: list[Message] = []  # every message ever handed out, in order
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.leaders: dict[int, set[NodeId]] = defaultdict(set)  # term -> leaders seen
        self.first_applied: dict[int, Entry] = {}  # index -> first entry applied there
        self.conflicts: list[tuple[NodeId, Entry, Entry]] = []  # state machine safety breaks
        self._boots = 0
        states = states or {}
        for node in self.ids:
            self.add(node, states.get(node, bootstrap_state(self.ids)))

    def __getitem__(self, node: NodeId) -> RaftCore:
        return self.cores[node]

    # -- nodes ------------------------------------------------------------------------------

    def add(self, node: NodeId, state: PersistentState | None = None) -> RaftCore:
        """Start `node` from `state` (empty: a new node waiting to be added by a leader)."""
        if node not in self.ids:
            self.ids.append(node)
        state = state or PersistentState()
        self.durable[node] = PersistentState(state.hard_state, state.snapshot, list(state.entries))
        return self.restart(node)

    def restart(self, node: NodeId) -> RaftCore:
        d = self.durable[node]
        self._boots += 1
        rng = random.Random(f"{self.seed}/{node}/{self._boots}")
        state = PersistentState(d.hard_state, d.snapshot, list(d.entries))
        core = RaftCore(Config(node, **self.config), rng, state, applied=d.snapshot.meta.index)
        self.cores[node] = core
        self.applied_index[node] = d.snapshot.meta.index
        return core

    def crash(self, node: NodeId) -> None:
        """Lose the node's volatile state and every message to or from it."""
        del self.cores[node]
        self.drop(frm=node)
        self.drop(to=node)

    def compact(self, node: NodeId, index: int | None = None) -> None:
        """The runtime snapshots `node`'s state machine at `index` (default: applied)."""
        core = self.cores[node]
        index = core.log.applied if index is None else index
        core.snapshot_taken(index, f"state@{index}".encode())
        d = self.durable[node]
        d.snapshot = core.log.snapshot
        d.entries = [e for e in d.entries if e.index > index]

    # -- the Ready loop -----------------------------------------------------------------------

    def drain(self, node: NodeId) -> None:
        core = self.cores[node]
        while core.has_ready():
            self.handle_ready(node, core.ready())

    def drain_all(self) -> None:
        for node in list(self.cores):
            self.drain(node)

    def handle_ready(self, node: NodeId, rd: Ready) -> None:
        """Do what `rd` asks, in the order of ready.py, then advance."""
        if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
            self.leaders[rd.soft_state.term].add(node)
        self._queue(rd.messages)
        d = self.durable[node]
        if rd.snapshot is not None:
            d.snapshot, d.entries = rd.snapshot, []
        if rd.entries:
            first = rd.entries[0].index
            d.entries = [e for e in d.entries if e.index < first] + list(rd.entries)
        if rd.hard_state is not None:
            d.hard_state = rd.hard_state
        self._queue(rd.persisted_messages)
        if rd.snapshot is not None:
            self.installed[node].append(rd.snapshot)
            self.applied_index[node] = rd.snapshot.meta.index
        for entry in rd.committed_entries:
            assert entry.index == self.applied_index[node] + 1, "applied out of order"
            self.applied_index[node] = entry.index
            self.applied[node][entry.index] = entry
            first_seen = self.first_applied.setdefault(entry.index, entry)
            if first_seen != entry:
                self.conflicts.append((node, entry, first_seen))
        self.read_states[node].extend(rd.read_states)
        self.cores[node].advance(rd)

    def _queue(self, messages: list[Message]) -> None:
        self.pending.extend(messages)
        self.sent.extend(messages)

    # -- moving messages ----------------------------------------------------------------------

    def deliver(
        self, types: Types = None, frm: Nodes = None, to: Nodes = None, once: bool = False
    ) -> int:
        """Deliver matching messages (and what they cause) until none is pending; with `once`,
        only those pending now. Others stay pending. Returns how many were delivered."""
        count = 0
        for _ in range(10_000):
            self.drain_all()
            batch = [m for m in self.pending if self._matches(m, types, frm, to)]
            if not batch:
                return count
            self.pending = [m for m in self.pending if not self._matches(m, types, frm, to)]
            for m in batch:
                arrives = m.to in self.cores and (m.frm, m.to) not in self.blocked
                if arrives:
                    self.cores[m.to].step(m)
                    self.drain(m.to)
                    count += 1
                self._report(m, arrives)
            if once:
                return count
        raise AssertionError("the network never went quiet")

    def drop(self, types: Types = None, frm: Nodes = None, to: Nodes = None) -> None:
        for m in self.pending:
            if self._matches(m, types, frm, to):
                self._report(m, False)
        self.pending = [m for m in self.pending if not self._matches(m, types, frm, to)]

    def _report(self, m: Message, arrived: bool) -> None:
        """A runtime streams a snapshot and tells the sender how that went."""
        if m.type is MessageType.SNAPSHOT and m.frm in self.cores:
            self.cores[m.frm].report_snapshot(m.to, arrived)

    def take(self, types: Types = None, frm: Nodes = None, to: Nodes = None) -> list[Message]:
        """Drain every node, then remove the matching pending messages and return them."""
        self.drain_all()
        taken = [m for m in self.pending if self._matches(m, types, frm, to)]
        self.pending = [m for m in self.pending if not self._matches(m, types, frm, to)]
        return taken

    @staticmethod
    def _matches(m: Message, types: Types, frm: Nodes, to: Nodes) -> bool:
        return _has(types, m.type) and _has(frm, m.frm) and _has(to, m.to)

    def isolate(self, *nodes: NodeId) -> None:
        for node in nodes:
            for other in self.ids:
                if other != node:
                    self.blocked |= {(node, other), (other, node)}

    def heal(self) -> None:
        self.blocked.clear()

    # -- time and elections -------------------------------------------------------------------

    def tick(self, nodes: Nodes = None, times: int = 1, settle: bool = True) -> None:
        """Tick the live `nodes` (default: all) `times` times, delivering after each tick."""
        for _ in range(times):
            for node in [n for n in self.cores if _has(nodes, n)]:
                self.cores[node].tick()
                self.drain(node)
            if settle:
                self.deliver()

    def elect(self, node: NodeId, settle: bool = True) -> RaftCore:
        """Make `node` campaign until it leads. With `settle=False` only election messages move,
        so the new leader's first appends are left pending."""
        core = self.cores[node]
        for _ in range(8):
            core.campaign()
            self.deliver(types=None if settle else ELECTION)
            if core.role is Role.LEADER:
                return core
            if not core.config.check_quorum:
                continue
            # Voters may still honour the lease of a leader that is gone: let their timers run
            # out, losing whatever they send meanwhile.
            keep = len(self.pending)
            others = [n for n in self.cores if n != node]
            self.tick(others, times=core.config.election_tick, settle=False)
            del self.pending[keep:]
        raise AssertionError(f"{node} could not win an election")

    # -- observations -------------------------------------------------------------------------

    def leader(self) -> NodeId | None:
        """The live leader of the highest term, if any."""
        leaders = [n for n, c in self.cores.items() if c.role is Role.LEADER]
        return max(leaders, key=lambda n: self.cores[n].term, default=None)

    def log(self, node: NodeId) -> list[tuple[int, int]]:
        """(index, term) of the entries `node` holds after its snapshot."""
        return [(e.index, e.term) for e in self.cores[node].log.entries]

    def count(
        self, types: Types = None, frm: Nodes = None, to: Nodes = None, since: int = 0
    ) -> int:
        return sum(1 for m in self.sent[since:] if self._matches(m, types, frm, to))

    def assert_safe(self) -> None:
        """At most one leader per term (§5.2) and one entry applied per index (§5.4.3)."""
        assert all(len(leaders) <= 1 for leaders in self.leaders.values()), dict(self.leaders)
        assert not self.conflicts, self.conflicts
