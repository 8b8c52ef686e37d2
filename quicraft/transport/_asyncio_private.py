"""The one private use of asyncio, kept in one place: reading every waiting datagram per turn.

asyncio's UDP transport (selector_events._SelectorDatagramTransport) reads one datagram each
time the event loop polls its socket, so a burst of N datagrams costs N turns of the loop, each
with its own epoll_wait and bookkeeping. read_in_batches() swaps the transport's reader for one
that reads up to BATCH datagrams a turn, with the same error handling as asyncio's own.

It relies on the transport's private `_sock`, `_sock_fd`, `_conn_lost`, `_fatal_error` and
`_add_reader`. Where they are not there (another event loop such as uvloop, another Python),
the transport is left as it is: slower, still correct.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: Datagrams read per turn at most, so one busy socket cannot starve the loop.
BATCH = 32
_NEEDED = ("_sock", "_sock_fd", "_conn_lost", "_fatal_error", "_add_reader", "max_size")


def read_in_batches(transport: asyncio.BaseTransport, protocol: asyncio.DatagramProtocol) -> bool:
    """Make `transport` hand `protocol` up to BATCH datagrams per loop turn; False if it
    cannot (see the module docstring)."""
    t: Any = transport
    if not all(hasattr(t, name) for name in _NEEDED):
        return False
    sock, size = t._sock, t.max_size

    def read_ready() -> None:
        for _ in range(BATCH):
            if t._conn_lost:
                return
            try:
                data, addr = sock.recvfrom(size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                t._fatal_error(exc, "Fatal read error on datagram transport")
                return
            protocol.datagram_received(data, addr)

    # The transport registers its own reader one loop turn after it is made (call_soon);
    # registering ours after that replaces it for good.
    asyncio.get_running_loop().call_soon(t._add_reader, t._sock_fd, read_ready)
    return True
