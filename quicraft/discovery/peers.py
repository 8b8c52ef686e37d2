"""Peers found by mDNS, and the table that turns service records into peer events.

Rules:

- An address is a hint, the node id is the identity. Events are per node id: DISCOVERED when
  an id appears, UPDATED when anything about it changes (address, name, formed state, even the
  instance name that carries it), LOST when no announcement carries it any more. A member that
  comes back on a new address is therefore an update of the same id, not a new peer.
- Only peers of our cluster name are reported, and never ourselves (by node id).
- Nothing here is trusted: the node layer verifies a peer over QUIC (its certificate must be
  signed by the cluster CA and carry this node id) before it believes a word of it.
- The table is pure (no zeroconf, no asyncio, no clock), so its rules are tested without a
  network; discovery.py feeds it what zeroconf resolves.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time discovery needs only zeroconf, not the QUIC stack
    from quicraft.transport.address import Address

from .errors import RecordError
from .txt import parse_txt

#: The most addresses kept of one announcement: anyone may announce any number, and the node
#: layer dials each one kept.
MAX_ADDRESSES = 8
#: "This network" (RFC 1122): a source address only, never a host to dial.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


class PeerEventKind(enum.Enum):
    DISCOVERED = "discovered"
    UPDATED = "updated"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class DiscoveredPeer:
    """A node of our cluster name, as it announces itself: a hint to verify, not a member."""

    #: The fingerprint of its public key: the identity to check when dialing it.
    node_id: str
    name: str
    cluster: str
    #: Where to dial it first: the most recently announced, most widely reachable address.
    address: Address
    #: The id of the formed cluster it belongs to; None while it is not a member of one.
    cluster_id: str | None
    #: The `v` it announces.
    version: int
    #: Every address it announces, the most recently announced first (all with address's port).
    addresses: tuple[str, ...] = ()
    #: The mDNS service instance that carried the announcement (for logs).
    instance: str = ""

    @property
    def formed(self) -> bool:
        return self.cluster_id is not None


@dataclass(frozen=True, slots=True)
class PeerEvent:
    kind: PeerEventKind
    #: The peer as it is now; for LOST, as it was last seen.
    peer: DiscoveredPeer
    #: For UPDATED: the peer as it was before.
    previous: DiscoveredPeer | None = None


def peer_from_service(
    instance: str, text: bytes, port: int, addresses: Sequence[str]
) -> DiscoveredPeer:
    """A peer from a resolved service (TXT bytes, SRV port, A/AAAA addresses newest first);
    RecordError if the record is not a valid announcement or has no usable address."""
    announced = parse_txt(text, port)
    ranked = _rank_addresses(addresses)
    if not ranked:
        raise RecordError(f"no usable address in {list(addresses)[:8]}")
    return DiscoveredPeer(
        node_id=announced.node_id,
        name=announced.name,
        cluster=announced.cluster,
        address=(ranked[0], announced.port),
        cluster_id=announced.cluster_id,
        version=announced.version,
        addresses=tuple(ranked),
        instance=instance,
    )


def _rank_addresses(addresses: Sequence[str]) -> list[str]:
    """Usable addresses, best first; within a rank the order given (newest first) is kept.

    Ranks: IPv4 on the LAN, global IPv6, IPv4 link-local, loopback. IPv6 link-local addresses
    are dropped: zeroconf gives them without the interface scope needed to dial them; so are
    addresses no host has (wildcard, multicast, broadcast and the rest of 240/4, 0/8). At
    most MAX_ADDRESSES are kept, the best.
    """
    ranked: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for position, text in enumerate(addresses):
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip.is_unspecified or ip.is_multicast or str(ip) in seen:
            continue
        if ip.version == 4 and (ip.is_reserved or ip in _THIS_NETWORK):
            continue
        if ip.is_loopback:
            rank = 3
        elif ip.is_link_local:
            if ip.version == 6:
                continue
            rank = 2
        else:
            rank = 0 if ip.version == 4 else 1
        seen.add(str(ip))
        ranked.append((rank, position, str(ip)))
    return [text for _, _, text in sorted(ranked)[:MAX_ADDRESSES]]


class PeerTable:
    """The peers of one cluster name, from the latest record of every service instance."""

    def __init__(self, cluster: str, own_id: str):
        self.cluster = cluster
        self.own_id = own_id
        # Instance name -> its latest peer.
        self._instances: dict[str, DiscoveredPeer] = {}
        # Node id -> the instances carrying it, in the order in which they last changed: the
        # last is its freshest announcement. (Indexed so that an update costs the same however
        # many instances are announced: anyone may announce thousands.)
        self._carriers: dict[str, dict[str, None]] = {}
        self._reported: dict[str, DiscoveredPeer] = {}

    def peers(self) -> dict[str, DiscoveredPeer]:
        """Node id -> peer, as last reported."""
        return dict(self._reported)

    def put(self, instance: str, peer: DiscoveredPeer | None) -> list[PeerEvent]:
        """Record the latest resolution of `instance`: a peer, or None when it no longer
        announces one of ours (removed, unparseable, another cluster). Returns the events."""
        if peer is not None and (peer.cluster != self.cluster or peer.node_id == self.own_id):
            peer = None
        old = self._instances.get(instance)
        if old == peer:
            return []  # a refresh that changes nothing keeps its place in the order
        if old is not None:
            del self._instances[instance]
            carriers = self._carriers[old.node_id]
            del carriers[instance]
            if not carriers:
                del self._carriers[old.node_id]
        if peer is not None:
            self._instances[instance] = peer
            self._carriers.setdefault(peer.node_id, {})[instance] = None
        ids = dict.fromkeys(p.node_id for p in (old, peer) if p is not None)
        return [event for node_id in ids if (event := self._settle(node_id)) is not None]

    def remove(self, instance: str) -> list[PeerEvent]:
        return self.put(instance, None)

    def _settle(self, node_id: str) -> PeerEvent | None:
        """Compare the freshest announcement of `node_id` with what was last reported."""
        carriers = self._carriers.get(node_id)
        current = self._instances[next(reversed(carriers))] if carriers else None
        before = self._reported.get(node_id)
        if current is None:
            if before is None:
                return None
            del self._reported[node_id]
            return PeerEvent(PeerEventKind.LOST, before)
        if current == before:
            return None
        self._reported[node_id] = current
        if before is None:
            return PeerEvent(PeerEventKind.DISCOVERED, current)
        return PeerEvent(PeerEventKind.UPDATED, current, before)
