"""What an unauthenticated sender costs a server: bounded handshakes, dropped in time, and no
answer larger than its packet before its address is known (found by an audit)."""

from __future__ import annotations

import asyncio
import os
import socket

from transport_helpers import Certs, eventually, run

from quicraft.transport import ALPN_RAFT, Connection, Stream, connect, serve
from quicraft.transport.quic import MAX_HALF_OPEN


async def idle(conn: Connection, stream: Stream) -> None:
    await stream.read_frame()


def junk_initial() -> bytes:
    """A long-header Initial of version 1 with a fresh connection id and an undecryptable
    payload: opens a connection on the server, which then never hears anything it can read."""
    header = b"\xc3\x00\x00\x00\x01" + b"\x08" + os.urandom(8) + b"\x08" + os.urandom(8)
    payload = os.urandom(1200)
    return header + b"\x00" + (0x4000 | len(payload)).to_bytes(2) + payload  # no token


def answers(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(65536))
        except BlockingIOError:
            return got


def test_a_flood_of_initials_opens_a_bounded_number_of_handshakes(certs: Certs) -> None:
    """Each Initial with a new connection id made a connection (about 75 KB) that lived for
    the idle timeout, 30 s: one sender could fill memory at the rate it sends."""
    n1, n2 = certs.load("n1"), certs.load("n2")

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: idle}, handshake_timeout=1.0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
            for i in range(MAX_HALF_OPEN + 100):
                flood.sendto(junk_initial(), server.address)
                if i % 16 == 0:
                    await asyncio.sleep(0.001)  # let the server read: the socket buffer is small
            await eventually(lambda: server.refusals["too_many_handshakes"] >= 50)
            assert server.handshakes == MAX_HALF_OPEN
            # Once the flood's handshakes are dropped, a real client gets in.
            conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT, timeout=10)
            assert server.refusals["handshake_timeout"] == MAX_HALF_OPEN
            assert server.handshakes == 0
            conn.close()
        server.close()

    run(main())


def test_a_handshake_that_does_not_finish_is_dropped_silently(certs: Certs) -> None:
    """Before, it stayed until the idle timeout (30 s), longer if its client kept sending."""
    n1 = certs.load("n1")

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: idle}, handshake_timeout=0.3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            sender.sendto(junk_initial(), server.address)
            await eventually(lambda: server.handshakes == 1)
            await eventually(lambda: server.handshakes == 0, timeout=3)
            assert server.refusals["handshake_timeout"] == 1
            assert server.connections == []
            await asyncio.sleep(0.1)
            assert answers(sender) == []  # dropped without a word
        server.close()

    run(main())


def test_a_small_packet_of_an_unknown_version_gets_no_answer(certs: Certs) -> None:
    """aioquic answered any long-header packet of an unknown version with a Version
    Negotiation packet, larger than a small packet that asked: with a forged source address,
    an amplifier. Only a datagram large enough to open a connection is answered (RFC 9000
    section 5.2.2)."""
    n1 = certs.load("n1")

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: idle})
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            # version 0x1a2a3a4a, connection ids of 8 bytes, no token, 5 bytes of payload
            probe = b"\xc0\x1a\x2a\x3a\x4a\x08" + os.urandom(8) + b"\x08" + os.urandom(8)
            probe += b"\x00\x05" + os.urandom(5)
            sender.sendto(probe, server.address)
            await asyncio.sleep(0.2)
            assert answers(sender) == []
            sender.sendto(probe + bytes(1200), server.address)
            await eventually(lambda: bool(answers(sender)))
        server.close()

    run(main())
