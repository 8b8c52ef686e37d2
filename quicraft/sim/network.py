"""A simulated network: every message is delayed, and may be dropped, duplicated or blocked.

Reordering comes from independent random delays. Partitions are sets of blocked directed
links, so symmetric, asymmetric, bridge and ring shapes are all the same mechanism. A message
is checked against the partition both when sent and when delivered (a link cut while a message
is in flight loses it, as a real one would).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from quicraft.core import Message, NodeId


@dataclass(slots=True)
class NetworkFaults:
    drop: float = 0.0  # probability a message is lost
    duplicate: float = 0.0  # probability a message is delivered twice
    min_delay: int = 1  # delivery delay in time units (a tick is 10 units)
    max_delay: int = 10
    long_delay: float = 0.0  # probability of a delay up to 20 ticks


@dataclass(slots=True)
class Network:
    rng: random.Random
    faults: NetworkFaults = field(default_factory=NetworkFaults)
    blocked: set[tuple[NodeId, NodeId]] = field(default_factory=set)
    sent: int = 0
    dropped: int = 0

    def can_reach(self, src: NodeId, dst: NodeId) -> bool:
        return (src, dst) not in self.blocked

    def delays(self, m: Message) -> list[int]:
        """Delivery delays for one message: [] if lost, two if duplicated."""
        self.sent += 1
        f = self.faults
        if not self.can_reach(m.frm, m.to) or self.rng.random() < f.drop:
            self.dropped += 1
            return []
        copies = 2 if self.rng.random() < f.duplicate else 1
        out = []
        for _ in range(copies):
            if self.rng.random() < f.long_delay:
                out.append(self.rng.randint(f.max_delay, 200))
            else:
                out.append(self.rng.randint(f.min_delay, f.max_delay))
        return out

    # -- partitions ---------------------------------------------------------------------------

    def heal(self) -> None:
        self.blocked.clear()

    def split(self, side_a: set[NodeId], side_b: set[NodeId]) -> None:
        """No traffic between the sides, either way."""
        self.one_way(side_a, side_b)
        self.one_way(side_b, side_a)

    def one_way(self, senders: set[NodeId], receivers: set[NodeId]) -> None:
        """Asymmetric: `senders` cannot reach `receivers`, the other direction still works."""
        self.blocked |= {(s, r) for s in senders for r in receivers if s != r}

    def bridge(self, nodes: list[NodeId], bridge: NodeId) -> None:
        """Two halves that only `bridge` connects."""
        rest = [n for n in nodes if n != bridge]
        half = len(rest) // 2
        self.split(set(rest[:half]), set(rest[half:]))

    def ring(self, nodes: list[NodeId]) -> None:
        """Each node reaches only its two neighbours on a ring."""
        n = len(nodes)
        for i, a in enumerate(nodes):
            neighbours = {nodes[(i - 1) % n], nodes[(i + 1) % n]}
            self.one_way({a}, set(nodes) - neighbours - {a})
