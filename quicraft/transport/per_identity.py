"""IdentitySlots: how many verified connections one identity may hold open to a server.

A verified certificate must not be a ticket to a server's memory without bound: each open
connection costs about 100 KB and its streams. Rules:

- An identity is a key: its fingerprint, Peer.node_id (a certificate issued again for the
  same key is the same identity). Its connections on every ALPN but Raft count towards one
  total, whatever its role.
- Raft connections (only role node may open them) are neither counted nor refused. A node
  key is trusted with every key and with the membership already (docs/security.md), so a
  limit would protect nothing from it; and a member's redial may overlap connections that are
  still closing or waiting for an idle timeout, which no limit may ever refuse: a refused
  Raft dial cuts a follower off.
- A connection takes its slot when it is accepted, and gives it back as soon as it is closed
  or over: closed by the server (refused later, the server closing), closed by the peer (when
  its CONNECTION_CLOSE arrives, not when the draining period after it ends: a client that
  closes and dials again at once must find its slot free), or ended (ConnectionTerminated,
  which ends every connection, a silent one at its idle timeout). A connection is held by
  identity, not counted, so giving one back twice, or one never taken, changes nothing.
- The connection that would be one too many is the one refused (`too_many_connections`),
  right after verification: the identity's open connections are never touched.
- limit 0 means no limit.
"""

from __future__ import annotations

from .verify import ALPN_RAFT, Peer, Refusal

TOO_MANY = "too_many_connections"  # the refusal reason, as counted and sent


class IdentitySlots:
    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"a limit of connections per identity must be >= 0, not {limit!r}")
        self.limit = limit
        #: node id -> its open connections (any hashable token each); no empty sets are kept,
        #: so identities that come and go leave nothing behind.
        self._held: dict[str, set[object]] = {}

    def refusal(self, peer: Peer, alpn: str) -> Refusal | None:
        """Why `peer` may not open one more connection on `alpn`, or None if it may."""
        if self.limit == 0 or alpn == ALPN_RAFT:
            return None
        count = len(self._held.get(peer.node_id, ()))
        if count < self.limit:
            return None
        detail = (
            f"{peer.name!r} (id {peer.node_id}) already has as many connections open to this "
            f"node as one identity may have ({count})"
        )
        return Refusal(TOO_MANY, detail)

    def take(self, peer: Peer, alpn: str, connection: object) -> None:
        if alpn != ALPN_RAFT:
            self._held.setdefault(peer.node_id, set()).add(connection)

    def give_back(self, node_id: str, connection: object) -> None:
        held = self._held.get(node_id)
        if held is None:
            return
        held.discard(connection)
        if not held:
            del self._held[node_id]

    def count(self, node_id: str) -> int:
        """The connections `node_id` holds open now."""
        return len(self._held.get(node_id, ()))
