"""How a removed node learns that it was removed, and stops.

A node removed from the membership is sent nothing more: the leader stops replicating to it
as soon as it appends the removal, so the node seldom even holds the entry, let alone knows
it committed. What it hears instead is its peers refusing it: each member that applies the
removal closes its connection (server._applied), and admission refuses it new ones. A
refusal says why in its detail, and when the refusing member's *committed* membership leaves
the node out, also the index up to which that membership is committed (`refusal_detail`).
On a LAN, members admit non-members (joiners must say hello) and say the same index in their
hello instead (wire/hello.py, `committed_without_you`).

Rules of this file (the node decides by `Refusals.removed`):
- A committed membership without this node, as of index x, is a fact of the cluster's history
  that never changes. If this node's newest configuration (including it) was made before x,
  a committed change after it removed the node. A refusal from a member whose log is behind
  says nothing of the kind: its committed index is below the change that added us, or its
  membership still has us. A node with no membership (fresh, waiting to be added) never
  stops: whoever refuses it knows an older history than the one it is about to receive.
- One member's word is not enough: it takes a majority of the other voters of this node's
  newest configuration (the membership that removed us, when it was the last change). A node
  removed and added again with the same key (after its data was deleted, docs/operations.md)
  may meet members that have not applied the addition; but once the addition is committed, a
  majority of its voters hold it, and a member that holds an addition of a node never says
  it is left out (`left_out_at`), which leaves fewer than a majority of the
  others to say otherwise (floor(n/2) of n). What the node heard before it was added (while
  it had no membership) does not count: then every member said it was left out, and it is
  about to hold old memberships of its log, with itself, while it catches up. Until the
  addition commits the new node hears from the leader adding it, which never refuses it, and
  a node hearing from a leader does not campaign, so it dials nobody else.
- The evidence comes from authenticated members over QUIC (the refusal's connection proved
  the peer's key); a detail that does not parse is no evidence.
"""

from __future__ import annotations

import re

from quicraft.core import Membership, NodeId, quorum

from .runtime import NodeError

#: Why a member refuses a Raft connection from a node outside its membership.
NOT_A_MEMBER = "not a member of this cluster"
_COMMITTED = re.compile(r"\(membership committed at index (\d{1,20})\)")


class RemovedFromCluster(NodeError):
    """This node was removed from its cluster's membership; it stops instead of knocking on
    the members' doors for ever."""


def refusal_detail(committed_without: int | None) -> str:
    """What a member says when it refuses a node outside its membership; `committed_without`
    is the index up to which its membership without that node is committed, if it is."""
    if committed_without is None:
        return NOT_A_MEMBER
    return f"{NOT_A_MEMBER} (membership committed at index {committed_without})"


def left_out_at(
    peer: NodeId, newest: Membership, committed: Membership, commit_index: int
) -> int | None:
    """What a member says of `peer` (refusal_detail, a hello): its commit index when both its
    committed and its newest membership leave `peer` out; None otherwise. A member that holds
    an addition of `peer`, committed or not, never says it; nor one with no membership."""
    if not newest.members() or peer in newest or peer in committed:
        return None
    return commit_index


def committed_without(detail: str) -> int | None:
    """The index a refusal's detail names (refusal_detail), or None."""
    found = _COMMITTED.search(detail)
    return int(found.group(1)) if found else None


class Refusals:
    """What members said when they refused this node: for each, the highest index up to which
    it said a membership without us is committed."""

    def __init__(self, me: NodeId) -> None:
        self.me = me
        self.said: dict[NodeId, int] = {}

    def heard(self, peer: NodeId, index: int, *, while_member: bool) -> None:
        """`peer` said that its membership committed as of `index` leaves us out. It counts
        only if we had a membership then (see the rules above)."""
        if not while_member:
            return
        if index > self.said.get(peer, 0):
            self.said[peer] = index

    def removed(self, membership: Membership, made_at: int) -> list[NodeId]:
        """The members whose refusals prove that this node was removed, given its newest
        membership and the index it was made at; empty unless they are a majority of its
        other voters. With us still in it, a committed membership without us must be newer
        than it; with us already out of it (we hold our own removal), as new will do."""
        others = membership.voters - {self.me}
        if not others:
            return []  # no membership yet: whoever refuses us knows an older history
        inside = self.me in membership
        proof = [
            peer
            for peer, index in self.said.items()
            if peer in others and (index > made_at if inside else index >= made_at)
        ]
        return sorted(proof) if quorum.has_quorum(others, proof) else []
