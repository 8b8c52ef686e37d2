"""The rules of forming and joining a cluster on a LAN: pure functions of what a node sees.

A node's *view* maps the node id of every VERIFIED peer of its cluster name (lan.py dialed it
over quicraft-raft/1 expecting that id: CA, cluster name and role were checked) to the cluster
id that peer announces, or None while it is not a member of a formed cluster. Peers that could
not be verified are not in the view: they never count. Times are seconds on any monotonic
clock; nothing here sleeps, dials or reads a clock.

Rules:

- Forming (FormingRule, for a fresh node: no stored state, no --peers, no --no-bootstrap):
  - a verified peer that announces a formed cluster of our name means "there is a cluster":
    JOIN (wait to be added), never found a second one;
  - otherwise wait until the unformed nodes seen, this node included, number at least
    `expect`, the view has stayed the same for `settle_s`, and `grace_s` has passed since the
    node started looking (so that an existing cluster has had time to answer). Then the node
    with the LOWEST id of those unformed nodes FOUNDs a cluster of one voter, itself, and the
    others JOIN: the founder's leader adds them. Every node that sees the same set picks the
    same founder, so exactly one initial configuration is made.
  - A verdict of FOUND or JOIN is final: the node layer acts on it once.
- Joining (next_change, on the leader only, one membership change at a time): first promote a
  caught-up learner while there are fewer voters than `target_voters`; else add one verified,
  unformed node that is not a member as a learner. A learner that is not needed as a voter
  stays a learner: a standby, promoted when a voter goes.
- Split (other_clusters): a verified peer of our name that announces a formed cluster with a
  different id is a second cluster of the same name: reported, never silently merged.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from quicraft.core import ConfChange, ConfChangeKind, NodeId

#: Before founding, look this long for an existing cluster (mDNS answers take about a second).
GRACE_S = 3.0
#: ...and wait until the set of unformed nodes has not changed for this long.
SETTLE_S = 2.0
#: The cluster id of a formed peer known only as a --join address that refused us (it has a
#: membership without us) and whose id it did not say: formed, but never a split.
UNKNOWN_CLUSTER = "unknown"


class Verdict(enum.Enum):
    WAIT = "wait"  #: keep looking
    FOUND = "found"  #: found a cluster of one voter (this node), then add the others
    JOIN = "join"  #: wait for a leader to add this node


@dataclass(slots=True)
class FormingRule:
    """The forming decision of one fresh node; feed it its view as it changes."""

    own_id: NodeId
    expect: int = 1
    grace_s: float = GRACE_S
    settle_s: float = SETTLE_S
    _started: float | None = field(default=None, init=False)
    _stable: frozenset[NodeId] = field(default=frozenset(), init=False)
    _stable_since: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.expect < 1:
            raise ValueError(f"expect must be at least 1, not {self.expect}")

    def unformed(self, view: Mapping[NodeId, str | None]) -> frozenset[NodeId]:
        """This node and the unformed nodes of the view."""
        return frozenset({self.own_id, *(n for n, cid in view.items() if cid is None)})

    def decide(self, now: float, view: Mapping[NodeId, str | None]) -> Verdict:
        if self._started is None:
            self._started = now
        if any(cid is not None for cid in view.values()):
            return Verdict.JOIN
        unformed = self.unformed(view)
        if unformed != self._stable:
            self._stable, self._stable_since = unformed, now
        if len(unformed) < self.expect:
            return Verdict.WAIT
        if now - self._started < self.grace_s or now - self._stable_since < self.settle_s:
            return Verdict.WAIT
        return Verdict.FOUND if min(unformed) == self.own_id else Verdict.JOIN


def next_change(
    voters: Set[NodeId],
    learners: Set[NodeId],
    ready: Set[NodeId],
    candidates: Set[NodeId],
    target_voters: int,
) -> ConfChange | None:
    """The leader's next membership change, or None.

    `ready`: learners caught up and answering; `candidates`: verified, unformed node ids.
    """
    if len(voters) < target_voters:
        for node in sorted(ready & learners):
            return ConfChange(ConfChangeKind.PROMOTE, node)
    for node in sorted(candidates - voters - learners):
        return ConfChange(ConfChangeKind.ADD_LEARNER, node)
    return None


def other_clusters(
    cluster_id: str | None, view: Mapping[NodeId, str | None]
) -> dict[str, list[NodeId]]:
    """Other cluster id -> the peers announcing it (sorted): the clusters our name is split
    into. Nothing while we have no cluster id ourselves."""
    if cluster_id is None:
        return {}
    found: dict[str, list[NodeId]] = {}
    for node, cid in sorted(view.items()):
        if cid is not None and cid not in (cluster_id, UNKNOWN_CLUSTER):
            found.setdefault(cid, []).append(node)
    return found
