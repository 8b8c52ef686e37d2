"""Real QUIC on 127.0.0.1: authenticated connections, frames both ways, and bad input."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from transport_helpers import Certs, eventually, run

from quicraft.transport import (
    ALPN_CLIENT,
    ALPN_EVENTS,
    ALPN_MGMT,
    ALPN_RAFT,
    Connection,
    Role,
    Stream,
    TransportError,
    connect,
    serve,
)
from quicraft.wire import ProtocolError


async def echo(conn: Connection, stream: Stream) -> None:
    """Answer every frame with the peer's name and the frame."""
    while (frame := await stream.read_frame()) is not None:
        stream.write_frame(conn.peer.name.encode() + b":" + frame)
    stream.end()


async def exchange(stream: Stream, frames: list[bytes]) -> list[bytes]:
    for frame in frames:
        stream.write_frame(frame)
    stream.end()
    answers = []
    while (answer := await stream.read_frame()) is not None:
        answers.append(answer)
    return answers


def test_nodes_talk_raft_both_ways_on_streams_opened_by_either_side(certs: Certs) -> None:
    n1, n2 = certs.load("n1"), certs.load("n2")

    async def main() -> None:
        accepted: list[Connection] = []
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: echo}, on_connection=accepted.append)
        assert server.address[0] == "127.0.0.1" and server.address[1] > 0
        conn = await connect(
            "127.0.0.1",
            server.address[1],
            n2,
            ALPN_RAFT,
            expect_node_id=n1.node_id,
            handlers={ALPN_RAFT: echo},
        )
        assert (conn.peer.name, conn.peer.node_id, conn.peer.role) == ("n1", n1.node_id, Role.NODE)
        assert conn.dialed and conn.alpn == ALPN_RAFT and not conn.closed
        assert conn.peer.address == ("127.0.0.1", server.address[1])

        # client-opened stream: the server's handler answers
        stream = await conn.open_stream()
        assert await exchange(stream, [b"a", b"", b"c" * 70_000]) == [
            b"n2:a",
            b"n2:",
            b"n2:" + b"c" * 70_000,
        ]
        # the server saw us as n2, and can open a stream of its own to our handler
        await eventually(lambda: len(accepted) == 1)
        back = accepted[0]
        assert (back.peer.name, back.peer.node_id, back.dialed) == ("n2", n2.node_id, False)
        assert server.connections == [back]
        reverse = await back.open_stream()
        assert await exchange(reverse, [b"x", b"y"]) == [b"n1:x", b"n1:y"]

        # several streams at once, each its own handler call
        streams = [await conn.open_stream() for _ in range(20)]
        results = await asyncio.gather(*(exchange(s, [bytes([i])]) for i, s in enumerate(streams)))
        assert results == [[b"n2:" + bytes([i])] for i in range(20)]

        conn.close("done")
        assert conn.closed
        await conn.wait_closed()
        await eventually(lambda: back.closed)
        server.close()

    run(main())


@pytest.mark.parametrize(
    ("name", "alpn"),
    [("cl", ALPN_CLIENT), ("rd", ALPN_CLIENT), ("admin", ALPN_MGMT), ("rd", ALPN_EVENTS)],
)
def test_clients_on_the_alpns_their_role_allows(certs: Certs, name: str, alpn: str) -> None:
    n1, me = certs.load("n1"), certs.load(name)

    async def main() -> None:
        handlers = {ALPN_CLIENT: echo, ALPN_MGMT: echo, ALPN_EVENTS: echo}
        server = await serve("127.0.0.1", 0, n1, handlers)
        conn = await connect("127.0.0.1", server.address[1], me, alpn)
        assert conn.peer.name == "n1" and conn.alpn == alpn
        assert await exchange(await conn.open_stream(), [b"hi"]) == [name.encode() + b":hi"]
        assert [c.peer.role for c in server.connections] == [me.role]
        conn.close()
        await conn.wait_closed()
        server.close()

    run(main())


def test_bulk_data_with_drain(certs: Certs) -> None:
    n1, n2 = certs.load("n1"), certs.load("n2")

    async def count(conn: Connection, stream: Stream) -> None:
        total = 0
        while (frame := await stream.read_frame()) is not None:
            total += len(frame)
        stream.write_frame(str(total).encode())

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: count})
        conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT)
        stream = await conn.open_stream()
        chunk = os.urandom(1 << 20)
        for _ in range(6):
            stream.write_frame(chunk)
            await stream.drain()
        stream.end()
        await stream.drain()  # after end(): everything acknowledged
        assert conn._protocol.streams.unacked(stream.stream_id) == 0
        assert await stream.read_frame() == str(6 << 20).encode()
        assert await stream.read_frame() is None
        unfinished = await conn.open_stream()
        unfinished.write_frame(chunk)
        conn.close()
        await stream.drain()  # all of it was delivered: closing afterwards changes nothing
        with pytest.raises(TransportError, match="closed"):
            await unfinished.drain()  # this one was cut off
        await conn.wait_closed()
        server.close()

    run(main(), timeout=60)


def test_a_malformed_frame_ends_only_its_stream(certs: Certs) -> None:
    n1, n2 = certs.load("n1"), certs.load("n2")
    errors: list[Exception] = []

    async def strict(conn: Connection, stream: Stream) -> None:
        try:
            await echo(conn, stream)
        except ProtocolError as err:
            errors.append(err)
            raise

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: strict}, max_frame=1024)
        conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT)
        bad = await conn.open_stream()
        bad.write_frame(b"ok")
        assert await bad.read_frame() == b"n2:ok"
        bad.write_frame(b"z" * 2048)  # longer than the server's max_frame
        with pytest.raises(TransportError, match="reset by the peer"):
            await bad.read_frame()
        await eventually(lambda: len(errors) == 1)
        assert "exceeds the limit of 1024" in str(errors[0])

        # a stream that ends inside a frame is malformed too
        cut = await conn.open_stream()
        cut._link.send(cut.stream_id, b"\x00\x00\x00\x09abc", True)
        with pytest.raises(TransportError):
            await cut.read_frame()
        await eventually(lambda: len(errors) == 2)
        assert "ended inside a frame" in str(errors[1])

        # the connection is fine
        assert not conn.closed
        assert await exchange(await conn.open_stream(), [b"still here"]) == [b"n2:still here"]
        conn.close()
        await conn.wait_closed()
        server.close()

    run(main())


def test_a_failing_handler_resets_its_stream_only(certs: Certs) -> None:
    n1, n2 = certs.load("n1"), certs.load("n2")

    async def flaky(conn: Connection, stream: Stream) -> None:
        frame = await stream.read_frame()
        if frame == b"boom":
            raise RuntimeError("handler bug")
        await echo(conn, stream) if frame is None else stream.write_frame(frame)

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: flaky})
        conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT)
        with pytest.raises(TransportError, match="reset by the peer"):
            await exchange(await conn.open_stream(), [b"boom"])
        assert await exchange(await conn.open_stream(), [b"fine"]) == [b"fine"]
        conn.close()
        await conn.wait_closed()
        server.close()

    run(main())


def test_garbage_datagrams_do_not_hurt_the_server(certs: Certs) -> None:
    n1, n2 = certs.load("n1"), certs.load("n2")

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: echo})
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
            for size in (0, 1, 5, 40, 1199, 1200, 1350, 1500):
                junk.sendto(os.urandom(size), server.address)
                # long-header Initial look-alikes: version 1, random connection ids, junk
                junk.sendto(
                    b"\xc3\x00\x00\x00\x01\x08" + os.urandom(max(size, 1300)), server.address
                )
                junk.sendto(b"\xc0\xff\x00\x00\x1d" + os.urandom(size), server.address)
            await asyncio.sleep(0.2)
        conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT)
        assert await exchange(await conn.open_stream(), [b"ping"]) == [b"n2:ping"]
        assert sum(server.refusals.values()) == 0
        conn.close()
        await conn.wait_closed()
        server.close()

    run(main())


def test_idle_connections_stay_up_with_keepalive(certs: Certs) -> None:
    n1, n2 = certs.load("n1"), certs.load("n2")

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: echo}, idle_timeout=1.0)
        conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT, idle_timeout=1.0)
        await asyncio.sleep(3.0)  # three idle timeouts
        assert not conn.closed
        assert await exchange(await conn.open_stream(), [b"awake"]) == [b"n2:awake"]
        conn.close()
        await conn.wait_closed()
        server.close()

    run(main())


def test_unreachable_and_silent_servers(certs: Certs) -> None:
    n2 = certs.load("n2")

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TransportError, match="unreachable"):
            await connect("127.0.0.1", closed_port, n2, ALPN_RAFT, timeout=5)
        assert loop.time() - start < 2  # ICMP port unreachable, not the timeout

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            with pytest.raises(TransportError, match=r"timed out after 0\.5s"):
                await connect("127.0.0.1", silent.getsockname()[1], n2, ALPN_RAFT, timeout=0.5)

    run(main())


def test_closing_either_end_is_seen_by_the_other(certs: Certs) -> None:
    n1, n2 = certs.load("n1"), certs.load("n2")

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: echo})
        conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT)
        stream = await conn.open_stream()
        stream.write_frame(b"one")
        assert await stream.read_frame() == b"n2:one"
        server.close()  # the server goes away while a stream is open
        with pytest.raises(TransportError, match="server closing"):
            await stream.read_frame()
        await conn.wait_closed()
        assert conn.closed
        with pytest.raises(TransportError):
            await conn.open_stream()
        with pytest.raises(TransportError):
            stream.write_frame(b"two")

    run(main())


def test_a_closed_dialer_frees_its_socket_before_wait_closed_returns(certs: Certs) -> None:
    # A client that closes and ends right after must leave no socket open ("unclosed
    # transport" warnings); within= bounds the wait, freeing the socket before the closing
    # period ends.
    n1, n2 = certs.load("n1"), certs.load("n2")

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: echo})
        try:
            for within in (None, 0.0):
                before = open_fds()
                conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT)
                with pytest.raises(TimeoutError):  # open: it is not freed, only waited for
                    await conn.wait_closed(0.01)
                assert open_fds() == before + 1 and not conn.ended
                conn.close("done")
                await conn.wait_closed(within)
                assert conn.ended and open_fds() == before
        finally:
            server.close()

    run(main())
