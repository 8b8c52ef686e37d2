"""What a node's command line says about discovery (`--no-mdns`, `--mdns-interface IFACE`,
`--join HOST:PORT`), as one value the node layer reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time discovery needs only zeroconf, not the QUIC stack
    from quicraft.transport.address import Address


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    #: Announce and browse by mDNS (`--no-mdns` turns it off).
    enabled: bool = True
    #: Interface names to run mDNS on (`--mdns-interface`, repeatable); empty means all of them.
    interfaces: tuple[str, ...] = ()
    #: Addresses to dial where multicast does not reach (`--join`). Not used by mDNS: the node
    #: layer dials them and treats them exactly like discovered hints.
    join: tuple[Address, ...] = ()
