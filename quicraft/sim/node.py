"""A simulated node: a Raft core driven by the Ready contract, with durable state that
survives crashes and a key-value state machine rebuilt from it on restart.

Only `durable` outlives a crash. A Ready being written when the node crashes is lost whole,
as if the write never reached the disk.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from quicraft.core import (
    Config,
    Entry,
    EntryType,
    HardState,
    PersistentState,
    RaftCore,
    Ready,
    Snapshot,
)

from .kv import Command, KVStore


@dataclass(slots=True)
class Durable:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot = field(default_factory=Snapshot)
    entries: list[Entry] = field(default_factory=list)

    def write(self, rd: Ready) -> None:
        """One atomic write of a Ready's snapshot, entries and hard state."""
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + rd.entries
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot.meta.index

    def term_at(self, index: int) -> int | None:
        """The stored term at `index`; None where nothing stored says (compacted, or beyond)."""
        if index == self.snapshot.meta.index:
            return self.snapshot.meta.term
        if self.entries and self.entries[0].index <= index <= self.entries[-1].index:
            return self.entries[index - self.entries[0].index].term
        return None

    def compact(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.entries = [e for e in self.entries if e.index > snapshot.meta.index]


@dataclass(slots=True)
class Applied:
    entry: Entry
    command: Command | None
    result: object


class SimNode:
    def __init__(self, config: Config, seed: int, durable: Durable, snapshot_every: int):
        self.id = config.id
        self.config = config
        self.durable = durable
        self.snapshot_every = snapshot_every
        self._rng = random.Random(seed)
        self.alive = False
        self.epoch = 0  # bumped by every crash, so writes begun before it are discarded
        self.writing: Ready | None = None
        self.core: RaftCore
        self.kv = KVStore()
        # ReadIndex reads confirmed by the leader, waiting to be applied: context -> index
        self.reads: dict[bytes, int] = {}
        self.start()

    def start(self) -> None:
        d = self.durable
        state = PersistentState(d.hard_state, d.snapshot, list(d.entries))
        self.core = RaftCore(self.config, self._rng, state, applied=d.snapshot.meta.index)
        self.kv = KVStore.restore(d.snapshot.data)
        self.reads = {}
        self.writing = None
        self.alive = True

    def crash(self) -> None:
        self.alive = False
        self.epoch += 1
        self.writing = None
        self.reads = {}

    def take_ready(self) -> Ready | None:
        """Begin the next write, if the core has work and no write is in progress."""
        if not self.alive or self.writing is not None or not self.core.has_ready():
            return None
        self.writing = self.core.ready()
        return self.writing

    def finish_write(self, rd: Ready) -> list[Applied]:
        """The write of `rd` reached the disk: apply, advance, maybe snapshot (ready.py 2-6)."""
        self.durable.write(rd)
        if rd.snapshot is not None:
            self.kv = KVStore.restore(rd.snapshot.data)
        applied = []
        for entry in rd.committed_entries:
            if entry.type is EntryType.NORMAL:
                command = Command.decode(entry.data)
                applied.append(Applied(entry, command, self.kv.apply(command)))
            else:
                applied.append(Applied(entry, None, None))
        for rs in rd.read_states:
            self.reads[rs.context] = rs.index
        self.writing = None
        self.core.advance(rd)
        self._maybe_snapshot()
        return applied

    def _maybe_snapshot(self) -> None:
        applied = self.core.log.applied
        if applied - self.durable.snapshot.meta.index >= self.snapshot_every:
            self.core.snapshot_taken(applied, self.kv.snapshot())
            self.durable.compact(self.core.log.snapshot)

    def ready_reads(self) -> list[bytes]:
        """Contexts of confirmed reads whose index is now applied."""
        applied = self.core.log.applied
        done = [ctx for ctx, index in self.reads.items() if index <= applied]
        for ctx in done:
            del self.reads[ctx]
        return done
