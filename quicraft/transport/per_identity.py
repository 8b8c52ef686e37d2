"""IdentitySlots: how many verified connections one identity may hold open to a server from
one address.

A verified certificate must not be a ticket to a server's memory without bound: each open
connection costs about 100 KB and its streams. Rules:

- An identity is a key: its fingerprint, Peer.node_id (a certificate issued again for the
  same key is the same identity). Its connections from one host (the address it was verified
  from, without the port) on every ALPN but Raft count towards one total, whatever its role.
  By host, because one client certificate is often deployed to a whole fleet of programs,
  each of which needs its own connections, while a program that leaks connections leaks
  them from the host it runs on (Consul bounds connections per client address likewise).
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
  identity and host, not counted, so giving one back twice, or one never taken, changes
  nothing.
- The connection that would be one too many is the one refused (`too_many_connections`),
  right after verification: the identity's open connections are never touched.
- limit 0 means no limit.
"""

from __future__ import annotations

from .verify import ALPN_RAFT, Peer, Refusal

TOO_MANY_CONNECTIONS = "too_many_connections"  # the refusal reason, as counted and sent


class IdentitySlots:
    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"a limit of connections per identity must be >= 0, not {limit!r}")
        self.limit = limit
        #: (node id, host) -> its open connections (any hashable token each); no empty sets
        #: are kept, so identities that come and go leave nothing behind.
        self._held: dict[tuple[str, str], set[object]] = {}

    def refusal(self, peer: Peer, alpn: str) -> Refusal | None:
        """Why `peer` may not open one more connection on `alpn`, or None if it may."""
        if self.limit == 0 or alpn == ALPN_RAFT:
            return None
        count = len(self._held.get(_key(peer), ()))
        if count < self.limit:
            return None
        detail = (
            f"{peer.name!r} (id {peer.node_id}) already has as many connections open to this "
            f"node from {peer.address[0]} as one identity may have from one address ({count})"
        )
        return Refusal(TOO_MANY_CONNECTIONS, detail)

    def take(self, peer: Peer, alpn: str, connection: object) -> None:
        if alpn != ALPN_RAFT:
            self._held.setdefault(_key(peer), set()).add(connection)

    def give_back(self, peer: Peer, connection: object) -> None:
        key = _key(peer)
        held = self._held.get(key)
        if held is None:
            return
        held.discard(connection)
        if not held:
            del self._held[key]

    def count(self, node_id: str) -> int:
        """The connections `node_id` holds open now, from every address."""
        return sum(len(held) for (holder, _), held in self._held.items() if holder == node_id)


def _key(peer: Peer) -> tuple[str, str]:
    return peer.node_id, peer.address[0]
