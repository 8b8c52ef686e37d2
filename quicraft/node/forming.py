"""The rules of forming and joining a cluster: pure functions of what a node sees.

A node's *view* maps the node id of every VERIFIED peer of its cluster name (lan.py dialed it
over quicraft-raft/1 expecting that id: CA, cluster name and role were checked) to the cluster
id that peer announces, or None while it is not a member of a formed cluster. Peers that could
not be verified are not in the view: they never count. Times are seconds on any monotonic
clock; nothing here sleeps, dials or reads a clock.

Rules:

- Forming (FormingRule, for a fresh node: no stored state, no --peers, no --no-bootstrap):
  - a verified peer that announces a formed cluster of our name, or says it is joining one,
    means "there is a cluster": JOIN (wait to be added), never found a second one; a peer that
    says it awaits another node's founding: JOIN and await that node too; a peer that awaits
    this node: FOUND once `grace_s` has passed (that peer counted enough nodes with this one
    the lowest, and this node may count fewer);
  - the unformed nodes this node counts are itself, the unformed peers it verified, and the
    ones each of those says it sees (the hello's `seen`): two hops, so that nodes that meet
    only through one seed (--join to it, no mDNS) count the same set. Not more hops: a node
    that went away would live on in what others repeat to each other;
  - wait until those number at least `expect`, have stayed the same for `settle_s`, and
    `grace_s` has passed since the node started looking (so that an existing cluster has had
    time to answer). Then the node with the LOWEST id of them FOUNDs a cluster of one voter,
    itself, and the others JOIN: the founder's leader adds them (a node it does not see
    itself dials it on the leader address a member's hello gives). Every node that counts
    the same set picks the same founder, so exactly one initial configuration is made; with
    mDNS every node sees every other; with --join seeds a node dials every node its peers say
    they see (lan.py), so it comes to see every other too, and the two-hop count bridges the
    moments before that.
  - A verdict of FOUND or JOIN is final: the node layer acts on it once.
- Joining (next_change, on the leader only, one membership change at a time): first promote a
  caught-up learner while there are fewer voters than `target_voters`; else add one verified,
  unformed node that is not a member as a learner. A learner that is not needed as a voter
  stays a learner: a standby, promoted when a voter goes.
- Split (other_clusters): a verified peer of our name that announces a formed cluster with a
  different id is a second cluster of the same name: reported, never silently merged.
- Static founders (founders_agree, for a fresh node given --peers): having reached every peer,
  a node founds the set {itself, those peers} only once every other member of that set has
  said in its hello that it founds (or founded) the very same set. A different set, or a peer
  already in a cluster founded otherwise, stops the node with FoundingError: two founders
  with different sets would each write their own founding entries at the same log positions.
  Of two overlapping sets at most one can be agreed by all its members, and a founder that
  started late joins the others' founding entries, identical to its own.
- Lost data (server.py): a node with no stored state that a peer remembers as a member (the
  hello's `remembers_you`) has lost its data; founding or joining as new would forget its
  votes, so it stops with FoundingError.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field

from quicraft.core import ConfChange, ConfChangeKind, NodeId
from quicraft.wire import Hello

#: Before founding, look this long for an existing cluster (mDNS answers take about a second).
GRACE_S = 3.0
#: ...and wait until the set of unformed nodes has not changed for this long.
SETTLE_S = 2.0
#: The cluster id of a formed peer known only as a --join address that refused us (it has a
#: membership without us) and whose id it did not say: formed, but never a split.
UNKNOWN_CLUSTER = "unknown"


class FoundingError(Exception):
    """This node must not found a cluster or join one as new; the message says why and what
    to do instead."""


class NeverFounded(FoundingError):
    """The set this node founds can never be founded: one of its founders is a member of a
    cluster already, for good."""


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
    #: After a JOIN: the node this one waits for to found (None: a formed cluster was seen).
    awaited: NodeId | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.expect < 1:
            raise ValueError(f"expect must be at least 1, not {self.expect}")

    def seen(self, view: Mapping[NodeId, str | None]) -> frozenset[NodeId]:
        """This node and the unformed nodes of the view: what its hello says it sees."""
        return frozenset({self.own_id, *(n for n, cid in view.items() if cid is None)})

    def unformed(
        self,
        view: Mapping[NodeId, str | None],
        seen_by: Mapping[NodeId, Set[NodeId]] | None = None,
    ) -> frozenset[NodeId]:
        """What this node counts: what it sees and what each unformed peer says it sees
        (`seen_by`), less the peers it knows to be formed."""
        seen = self.seen(view)
        heard = [(seen_by or {}).get(n, ()) for n in seen]
        formed = {n for n, cid in view.items() if cid is not None}
        return frozenset(seen.union(*heard) - formed)

    def decide(
        self,
        now: float,
        view: Mapping[NodeId, str | None],
        seen_by: Mapping[NodeId, Set[NodeId]] | None = None,
        joining: Set[NodeId] = frozenset(),
        awaits: Mapping[NodeId, NodeId] | None = None,
    ) -> Verdict:
        """`seen_by`: what unformed peers say they see; `joining`: peers that say they wait
        to be added to a formed cluster; `awaits`: peer -> the founder it waits for."""
        if self._started is None:
            self._started = now
        if any(cid is not None for cid in view.values()) or not joining.isdisjoint(view):
            return Verdict.JOIN
        awaited = {f for n, f in (awaits or {}).items() if n in view}
        if awaited - {self.own_id}:
            self.awaited = min(awaited - {self.own_id})
            return Verdict.JOIN
        if self.own_id in awaited and now - self._started >= self.grace_s:
            # A peer counted enough nodes and awaits this one, which may count fewer (what
            # that peer saw is two hops from here): found, or everyone waits.
            return Verdict.FOUND
        unformed = self.unformed(view, seen_by)
        if unformed != self._stable:
            self._stable, self._stable_since = unformed, now
        if len(unformed) < self.expect:
            return Verdict.WAIT
        if now - self._started < self.grace_s or now - self._stable_since < self.settle_s:
            return Verdict.WAIT
        if min(unformed) == self.own_id:
            return Verdict.FOUND
        self.awaited = min(unformed)
        return Verdict.JOIN


def waiting_for(seen: int, expect: int) -> str:
    """What a fresh node still deciding waits for, `seen` unformed nodes counted."""
    if seen < expect:
        return f"{seen} of {expect} nodes seen and verified; waiting for the others"
    return (
        f"{seen} nodes seen and verified (--expect {expect}); deciding once no other node "
        "or cluster has appeared for a few seconds"
    )


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


def founders_agree(
    own_id: NodeId, founders: Set[NodeId], said: Mapping[NodeId, Hello], names: Mapping[NodeId, str]
) -> bool:
    """Whether this fresh node may found `founders` (itself included) now: True once every
    other founder has said the same set, False while one has not said a set yet.

    `said`: the latest hello of each peer; `names`: node names (of their certificates) for
    the messages. Raises FoundingError when a founder says another set, NeverFounded when
    a founder is already in a cluster (founded from other --peers, or without them).
    """
    ours = sorted(founders)

    def listed(ids: Iterable[NodeId]) -> str:
        return ", ".join(names.get(n, n) for n in ids)

    agreed = True
    for peer in sorted(set(founders) - {own_id}):
        hello = said.get(peer)
        who = f"{names[peer]} ({peer})" if peer in names else peer
        if hello is None or (hello.founders is None and not hello.formed):
            agreed = False  # it has not reached all of its peers yet
        elif hello.founders is None:
            raise NeverFounded(
                f"{who} is already a member of a cluster that was not founded from --peers; to"
                " join it, start this node with --no-bootstrap and add it with"
                " `quicraft mgmt add-member`"
            )
        elif sorted(hello.founders) != ours:
            error = NeverFounded if hello.formed else FoundingError
            raise error(
                f"{who} founds with {listed(hello.founders)} but this node's --peers make"
                f" {listed(ours)}: give every founding node the same --peers"
            )
    return agreed
