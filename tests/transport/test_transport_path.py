"""Datagram sizes: larger only on loopback, where the kernel is both ends of the path."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from transport_helpers import Certs, run

from quicraft.transport import ALPN_RAFT, Connection, Stream, connect, serve
from quicraft.transport import _aioquic_private as private
from quicraft.transport.address import is_loopback
from quicraft.transport.path import MAX_DATAGRAM_SIZE, datagram_size_to

LO_MTU = Path("/sys/class/net/lo/mtu")


def loopback_size(headers: int) -> int:
    if not sys.platform.startswith("linux") or not LO_MTU.exists():
        pytest.skip("reads the loopback MTU the Linux way")
    return min(MAX_DATAGRAM_SIZE, int(LO_MTU.read_text()) - headers)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.20.30.40", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("192.168.1.20", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("2001:db8::1", False),
        ("localhost", True),
        ("node1", False),  # any other name: only resolved addresses are judged
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_loopback_paths_get_datagrams_as_large_as_lo_carries_up_to_the_cap() -> None:
    assert datagram_size_to("127.0.0.1") == loopback_size(20 + 8)
    assert datagram_size_to("127.0.0.2") == loopback_size(20 + 8)


def test_the_ipv6_loopback_path_gets_datagrams_as_large_as_lo_carries() -> None:
    # A test of its own: without ::1 it is reported as skipped, not passed within another.
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback (::1) here")
    assert datagram_size_to("::1") == loopback_size(40 + 8)


@pytest.mark.parametrize("host", ["10.77.0.2", "192.168.1.20", "2001:db8::1", "fe80::1%eth0"])
def test_every_other_path_keeps_the_size_every_ip_path_carries(host: str) -> None:
    assert datagram_size_to(host) == 1200


def test_a_loopback_connection_uses_large_datagrams_at_both_ends(certs: Certs) -> None:
    n1, n2 = certs.load("n1"), certs.load("n2")
    expected = loopback_size(20 + 8)
    big = bytes(range(256)) * 200  # 51 KB: several large datagrams

    async def echo(conn: Connection, stream: Stream) -> None:
        while (frame := await stream.read_frame()) is not None:
            stream.write_frame(frame)
        stream.end()

    async def main() -> None:
        accepted: list[Connection] = []
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: echo}, on_connection=accepted.append)
        conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT)
        try:
            stream = await conn.open_stream()
            stream.write_frame(big)
            stream.end()
            assert await stream.read_frame() == big
            sizes = {c._protocol._quic.configuration.max_datagram_size for c in [conn, *accepted]}
            assert len(accepted) == 1 and sizes == {expected}
        finally:
            conn.close()
            server.close()

    run(main())


def test_the_server_configures_a_connection_only_from_a_long_header_datagram() -> None:
    """Short-header datagrams (every 1-RTT packet) never change the next configuration."""
    seen: list[Any] = []
    sized = QuicConfiguration(is_client=False, max_datagram_size=4000)

    def configure(addr: tuple[Any, ...]) -> QuicConfiguration:
        seen.append(addr)
        return sized

    async def main() -> None:
        server = private.PerClientConfigServer(
            configure=configure,
            may_open=lambda addr: True,
            configuration=QuicConfiguration(is_client=False),
        )
        server.datagram_received(b"\x40" + bytes(40), ("127.0.0.1", 1111))  # short header
        assert seen == []
        # a long header: a version 1 Handshake packet of no connection the server knows
        handshake = b"\xe0\x00\x00\x00\x01" + b"\x08" + bytes(8) + b"\x08" + bytes(8)
        server.datagram_received(handshake + b"\x14" + bytes(20), ("127.0.0.1", 2222))
        assert seen == [("127.0.0.1", 2222)]

    asyncio.run(main())
