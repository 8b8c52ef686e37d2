"""read_in_batches: a burst of datagrams is read in one loop turn, in order, errors intact."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from transport_helpers import run

from quicraft.transport._asyncio_private import BATCH, read_in_batches


class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.turns: set[int] = set()  # loop turns (by a counter the test advances) with data
        self.turn = 0
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        self.turns.add(self.turn)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


async def _endpoint(**kwargs: Any) -> tuple[asyncio.DatagramTransport, Recorder]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Recorder, **kwargs)
    assert read_in_batches(transport, protocol)
    await asyncio.sleep(0)  # our reader takes over one turn later
    return transport, protocol


def test_a_burst_is_read_in_order_in_few_loop_turns() -> None:
    async def scenario() -> None:
        transport, protocol = await _endpoint(local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        count = 3 * BATCH
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for i in range(count):
                sender.sendto(i.to_bytes(2, "big"), ("127.0.0.1", port))
        while len(protocol.received) < count:
            protocol.turn += 1
            await asyncio.sleep(0)
        assert protocol.received == [i.to_bytes(2, "big") for i in range(count)]
        # One datagram per turn would take `count` turns; a batch takes BATCH at a time.
        assert len(protocol.turns) <= count // BATCH + 1
        transport.close()

    run(scenario())


def test_errors_still_reach_the_protocol() -> None:
    async def scenario() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        # A connected socket to a port nobody listens on: ICMP "port unreachable" comes back
        # as an error on the next read, which must reach error_received as asyncio's would.
        transport, protocol = await _endpoint(remote_addr=("127.0.0.1", port))
        transport.sendto(b"anyone?")
        for _ in range(100):
            if protocol.errors:
                break
            await asyncio.sleep(0.01)
        assert protocol.errors and isinstance(protocol.errors[0], ConnectionRefusedError)
        transport.close()

    run(scenario())


def test_an_unknown_transport_is_left_alone() -> None:
    class Foreign(asyncio.DatagramTransport):
        pass

    assert read_in_batches(Foreign(), Recorder()) is False
