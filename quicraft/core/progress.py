"""What a leader knows of each follower's log, and how it paces replication to it.

A follower is in one of three states:

- PROBE: the leader does not know where the logs match. It sends one AppendEntries and waits for
  the answer (or the next heartbeat response) before sending another.
- REPLICATE: the logs match up to `match`; the leader streams entries optimistically, moving
  `next` ahead without waiting, bounded by an in-flight window (count and bytes).
- SNAPSHOT: the follower needs entries the leader has compacted; a snapshot is on its way and
  nothing else is sent until the follower acknowledges it or the runtime reports it failed.

Invariant: `match < next`.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Inflights:
    """AppendEntries sent but not acknowledged, as (last index, bytes) in sending order."""

    max_count: int
    max_bytes: int
    sent: deque[tuple[int, int]] = field(default_factory=deque)
    bytes: int = 0

    def add(self, last_index: int, size: int) -> None:
        self.sent.append((last_index, size))
        self.bytes += size

    def free_to(self, index: int) -> None:
        """Acknowledgement up to `index` frees every message that ended at or below it."""
        while self.sent and self.sent[0][0] <= index:
            self.bytes -= self.sent.popleft()[1]

    def full(self) -> bool:
        return len(self.sent) >= self.max_count or self.bytes >= self.max_bytes

    def reset(self) -> None:
        self.sent.clear()
        self.bytes = 0


@dataclass(slots=True)
class Progress:
    match: int
    next: int
    inflights: Inflights
    state: ProgressState = ProgressState.PROBE
    # PROBE: an append is outstanding; wait for a response or heartbeat response.
    probe_sent: bool = False
    # SNAPSHOT: the index of the snapshot being sent.
    pending_snapshot: int = 0
    # CheckQuorum: ticks since this peer last answered the leader.
    silent_ticks: int = 0
    # Whether this peer has answered this leader at all: silent_ticks starts at 0 for every
    # peer of a new leader, so it alone cannot tell one that is down from one that answers.
    answered: bool = False
    # ReadIndex: the newest read round this peer has confirmed in the current term.
    read_round: int = 0
    # Ticks since the leader last sent this peer an append or a heartbeat (raft._tick_leader).
    quiet_ticks: int = 0

    def become_probe(self) -> None:
        # After a snapshot, resume just past it: the follower has at least that much.
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self.next = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = index

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """The follower matches up to `index`. Returns whether that is news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def sent_entries(self, last_index: int, size: int) -> None:
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflights.add(last_index, size)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def maybe_decrease_to(self, rejected: int, hint: int) -> bool:
        """The follower rejected an append at `rejected`; retry from `hint` + 1.

        Returns False for a stale rejection (one for an append older than what we now know).
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True
