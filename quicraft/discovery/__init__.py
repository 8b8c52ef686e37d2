"""quicraft.discovery: find the nodes of a cluster on the LAN by mDNS (zeroconf).

Every node announces `_quicraft._udp.local.` with its QUIC port, the addresses it listens on,
and a TXT record (cluster name, node id, name, protocol version, formed flag and cluster id),
and browses for the others. Peers of its cluster name are reported as DISCOVERED, UPDATED and
LOST events, by node id: an address is a hint, the key is the identity, and the node layer
verifies every peer over QUIC before it trusts it. docs/discovery.md tells the whole story.

    async with Discovery(Announcement("c1", node_id, "n1", 7400), interfaces=["eth0"]) as d:
        async for event in d.events():
            ...

Modules (the public API is what this package exports):

    mdns         Discovery: the zeroconf glue that announces and browses; find_nodes, for tools
    peers        DiscoveredPeer, PeerEvent, and PeerTable, the pure rules of the events
    txt          Announcement and the strict TXT record codec
    interfaces   interface names -> IPv4 addresses, and which addresses to announce
    settings     DiscoverySettings: what the command line says
    errors       DiscoveryError, RecordError

Exceptions:

    DiscoveryError    discovery cannot run as asked (bad interface, name taken, no sockets)
    RecordError       (ValueError) a record off the wire that is not a valid announcement
"""

from .errors import DiscoveryError, RecordError
from .interfaces import announce_addresses, interface_addresses, ipv4_address, local_addresses
from .mdns import Discovery, EventCallback, find_nodes, instance_label
from .peers import DiscoveredPeer, PeerEvent, PeerEventKind, PeerTable, peer_from_service
from .settings import DiscoverySettings
from .txt import (
    MAX_TXT_BYTES,
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    Announcement,
    decode_txt,
    encode_txt,
    parse_txt,
)

__all__ = [
    "MAX_TXT_BYTES",
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "Announcement",
    "DiscoveredPeer",
    "Discovery",
    "DiscoveryError",
    "DiscoverySettings",
    "EventCallback",
    "PeerEvent",
    "PeerEventKind",
    "PeerTable",
    "RecordError",
    "announce_addresses",
    "decode_txt",
    "encode_txt",
    "find_nodes",
    "instance_label",
    "interface_addresses",
    "ipv4_address",
    "local_addresses",
    "parse_txt",
    "peer_from_service",
]
