"""How large a QUIC datagram the path to a peer carries.

aioquic sends datagrams of at most `max_datagram_size` bytes, 1200 unless told otherwise: the
size every IP path must carry. It does no path MTU discovery, and most of its cost is per
packet rather than per byte, so a batch of appends split into 1200-byte datagrams costs several
times what one datagram would (measured in docs/performance-log.md, "Datagram size").

Only one kind of path is known for certain without discovery: loopback, where this kernel is
both ends and the MTU is lo's (65536 on Linux, read from /sys: reading it binds no port). There
we send datagrams of up to MAX_DATAGRAM_SIZE. Across a network a larger route MTU on our side
says nothing about the far side or the hops between (a tunnel, a host with a smaller MTU), and
a datagram that does not fit is dropped silently, so every other path keeps 1200.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration

from .address import is_loopback

#: Linux's loopback interface; every loopback address is routed through it.
_LO_MTU = Path("/sys/class/net/lo/mtu")

#: The largest datagram we send even where the path allows more: batches of appends rarely
#: need more, and one lost datagram then costs at most this much to resend.
MAX_DATAGRAM_SIZE = 16 * 1024


@functools.lru_cache(maxsize=256)
def datagram_size_to(host: str) -> int:
    """The QUIC datagram size to use towards the IP address `host` (see the module docstring)."""
    if not is_loopback(host):
        return SMALLEST_MAX_DATAGRAM_SIZE
    try:
        mtu = int(_LO_MTU.read_text())
    except (OSError, ValueError):  # not Linux
        return SMALLEST_MAX_DATAGRAM_SIZE
    headers = 40 + 8 if ":" in host else 20 + 8  # IPv6 or IPv4, and UDP
    return max(SMALLEST_MAX_DATAGRAM_SIZE, min(MAX_DATAGRAM_SIZE, mtu - headers))


def sized_for(configuration: QuicConfiguration, host: str) -> QuicConfiguration:
    """`configuration` for a connection with the peer at IP address `host`."""
    size = datagram_size_to(host)
    if size == configuration.max_datagram_size:
        return configuration
    return dataclasses.replace(configuration, max_datagram_size=size)
