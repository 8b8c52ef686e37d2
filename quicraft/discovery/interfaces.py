"""Network interfaces by name -> their IPv4 addresses, with the standard library only.

How: `socket.if_nameindex()` lists the interfaces, and `ioctl(SIOCGIFADDR)` on a UDP socket
asks the kernel for one interface's primary IPv4 address (the call `ifconfig` makes). That is
Linux (and `fcntl` is POSIX only); elsewhere, name no interfaces and zeroconf uses all of them.
Only the primary address of each interface is seen, which is what mDNS needs: zeroconf binds
one multicast socket per interface, to one of its addresses.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Sequence

from .errors import DiscoveryError

#: <linux/sockios.h>: get the (primary) IPv4 address of an interface.
SIOCGIFADDR = 0x8915
#: IFNAMSIZ - 1: the longest interface name Linux allows.
MAX_INTERFACE_NAME = 15
_WILDCARDS = {"", "0.0.0.0", "::"}


def ipv4_address(interface: str) -> str:
    """The IPv4 address of `interface`; DiscoveryError if there is none or no such interface."""
    try:
        import fcntl
    except ImportError:
        raise DiscoveryError("choosing mDNS interfaces by name needs Linux") from None
    name = interface.encode()
    if not name or len(name) > MAX_INTERFACE_NAME or b"\0" in name:
        raise DiscoveryError(f"bad interface name {interface!r}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            # struct ifreq: the name (IFNAMSIZ bytes), then a struct sockaddr_in whose address
            # is at offset 4 of the sockaddr, so at byte 20 of the result.
            reply = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name))
        except OSError as err:
            if err.errno == errno.ENODEV:
                raise DiscoveryError(f"no network interface named {interface!r}") from None
            if err.errno == errno.EADDRNOTAVAIL:
                raise DiscoveryError(f"interface {interface!r} has no IPv4 address") from None
            raise DiscoveryError(f"cannot read the address of {interface!r}: {err}") from None
    return socket.inet_ntoa(reply[20:24])


def interface_addresses(interfaces: Sequence[str]) -> list[str]:
    """The IPv4 addresses of the named interfaces, in order, without repeats."""
    return list(dict.fromkeys(ipv4_address(name) for name in interfaces))


def local_addresses() -> list[str]:
    """The IPv4 addresses of every interface that has one, loopback excluded."""
    found = []
    for _, name in socket.if_nameindex():
        try:
            address = ipv4_address(name)
        except DiscoveryError:
            continue  # down, IPv6 only, or gone since it was listed
        if not ipaddress.ip_address(address).is_loopback:
            found.append(address)
    return list(dict.fromkeys(found))


def announce_addresses(listen_host: str, interfaces: Sequence[str] = ()) -> list[str]:
    """The addresses to announce for a node listening on `listen_host`.

    A node bound to one address announces that one. A node bound to the wildcard announces
    the IPv4 addresses of the mDNS interfaces (all but loopback when none are named), or
    loopback when it has nothing else.
    """
    if listen_host not in _WILDCARDS:
        return [listen_host]
    found = interface_addresses(interfaces) if interfaces else local_addresses()
    return found or ["127.0.0.1"]
