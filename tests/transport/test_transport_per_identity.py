"""The bound on connections one verified identity may hold open to a server: the one too many
is refused (and named, logged, counted), a connection that ends frees its slot however it
ends, other identities and Raft are not affected."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap

import pytest
from transport_helpers import Certs, eventually, run

from quicraft.transport import (
    ALPN_CLIENT,
    ALPN_EVENTS,
    ALPN_MGMT,
    ALPN_RAFT,
    Connection,
    Identity,
    Peer,
    Refusal,
    RefusedError,
    Role,
    Server,
    Stream,
    connect,
    serve,
)
from quicraft.transport.per_identity import IdentitySlots

ALPNS = (ALPN_CLIENT, ALPN_MGMT, ALPN_EVENTS, ALPN_RAFT)


async def echo(conn: Connection, stream: Stream) -> None:
    while (frame := await stream.read_frame()) is not None:
        stream.write_frame(frame)


async def served(server: Server, conn: Connection) -> bool:
    """The connection still carries a request and its answer."""
    stream = await conn.open_stream()
    stream.write_frame(b"hi")
    stream.end()
    return await stream.read_frame() == b"hi"


async def dial(server: Server, me: Identity, alpn: str, idle_timeout: float = 30) -> Connection:
    return await connect(
        "127.0.0.1", server.address[1], me, alpn, timeout=10, idle_timeout=idle_timeout
    )


async def closed(conn: Connection) -> None:
    conn.close()
    await conn.wait_closed(within=1)


def test_the_connection_one_too_many_is_refused_with_the_limit_named(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    cl, rd, n2 = certs.load("cl"), certs.load("rd"), certs.load("n2")

    async def main() -> None:
        server = await serve(
            "127.0.0.1", 0, certs.load("n1"), dict.fromkeys(ALPNS, echo), max_per_identity=2
        )
        # Two ALPNs, one identity: they count together.
        first = await dial(server, cl, ALPN_CLIENT)
        second = await dial(server, cl, ALPN_EVENTS)
        assert server.connections_of(cl.node_id) == 2
        with (
            caplog.at_level(logging.WARNING, "quicraft.transport"),
            pytest.raises(RefusedError) as caught,
        ):
            await dial(server, cl, ALPN_CLIENT)
        err = caught.value
        assert err.reason == "too_many_connections"
        assert f"'cl' (id {cl.node_id}) already has as many connections open" in str(err)
        assert err.detail.endswith("from 127.0.0.1 as one identity may have from one address (2)")
        assert server.refusals == {"too_many_connections": 1}
        logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("too_many_connections" in line and "'cl'" in line for line in logged)
        # The refused one was the new one: both open connections still serve.
        assert await served(server, first) and await served(server, second)
        assert server.connections_of(cl.node_id) == 2
        # Another identity has slots of its own.
        others = [await dial(server, rd, ALPN_CLIENT) for _ in range(2)]
        assert server.connections_of(rd.node_id) == 2
        # Raft connections are neither counted nor refused.
        raft = [await dial(server, n2, ALPN_RAFT) for _ in range(3)]
        assert all([await served(server, c) for c in raft])
        assert server.connections_of(n2.node_id) == 0
        for conn in [first, second, *others, *raft]:
            await closed(conn)
        server.close()

    run(main())


def test_a_connection_that_ends_gives_its_slot_back(certs: Certs) -> None:
    admin = certs.load("admin")

    async def main() -> None:
        server = await serve(
            "127.0.0.1", 0, certs.load("n1"), dict.fromkeys(ALPNS, echo), max_per_identity=2
        )
        # Closed by the client, which dials again at once: the server counts the close when it
        # arrives, not once the draining period after it is over.
        first = await dial(server, admin, ALPN_MGMT)
        second = await dial(server, admin, ALPN_CLIENT)
        first.close()
        third = await dial(server, admin, ALPN_MGMT)
        assert await served(server, third)
        assert server.connections_of(admin.node_id) == 2
        # Closed by the server, as a refusal after the fact (how a node drops a member).
        (accepted,) = [c for c in server.connections if c.alpn == ALPN_CLIENT]  # second's
        accepted.refuse(Refusal("not_admitted", "gone"))
        assert server.connections_of(admin.node_id) == 1
        fourth = await dial(server, admin, ALPN_CLIENT)
        # The server closing ends them all.
        server.close()
        await eventually(lambda: server.connections_of(admin.node_id) == 0)
        for conn in (first, second, third, fourth):
            await closed(conn)

    run(main())


# A client that connects, says so, and waits to be killed: it never closes its connection.
VANISHING_CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    from quicraft.transport import ALPN_CLIENT, connect, load_identity

    async def main():
        me = load_identity(sys.argv[1], "c1", "cl")
        await connect("127.0.0.1", int(sys.argv[2]), me, ALPN_CLIENT, timeout=10)
        print("connected", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


def test_a_client_that_vanishes_gives_its_slot_back_at_the_idle_timeout(certs: Certs) -> None:
    cl = certs.load("cl")

    async def main() -> None:
        server = await serve(
            "127.0.0.1",
            0,
            certs.load("n1"),
            dict.fromkeys(ALPNS, echo),
            idle_timeout=1.0,
            max_per_identity=1,
        )
        client = subprocess.Popen(
            [sys.executable, "-c", VANISHING_CLIENT, str(certs.root), str(server.address[1])],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert client.stdout is not None
            # Read in a thread: the server answers the client on this loop meanwhile.
            assert await asyncio.to_thread(client.stdout.readline) == "connected\n"
            assert server.connections_of(cl.node_id) == 1
            with pytest.raises(RefusedError, match="too_many_connections"):
                await dial(server, cl, ALPN_CLIENT, idle_timeout=1.0)
        finally:
            client.kill()  # no CONNECTION_CLOSE: the server hears nothing more
            client.wait()
        await eventually(lambda: server.connections_of(cl.node_id) == 0, timeout=5)
        conn = await dial(server, cl, ALPN_CLIENT, idle_timeout=1.0)
        assert await served(server, conn)
        await closed(conn)
        server.close()

    run(main())


def test_slots_are_kept_by_identity_and_host_and_leave_nothing_behind() -> None:
    peer = Peer("abcd", "cl", Role.CLIENT, "c1", ("127.0.0.1", 1))
    same_key_elsewhere = Peer("abcd", "cl", Role.CLIENT, "c1", ("10.0.0.7", 1))
    slots = IdentitySlots(1)
    assert slots.refusal(peer, ALPN_CLIENT) is None
    slots.take(peer, ALPN_CLIENT, "a")
    refusal = slots.refusal(peer, ALPN_EVENTS)
    assert refusal is not None and refusal.reason == "too_many_connections"
    assert "from 127.0.0.1" in refusal.detail
    assert slots.refusal(peer, ALPN_RAFT) is None
    # One certificate deployed on many hosts: each host has slots of its own.
    assert slots.refusal(same_key_elsewhere, ALPN_CLIENT) is None
    slots.take(same_key_elsewhere, ALPN_CLIENT, "b")
    assert slots.count("abcd") == 2
    slots.give_back(peer, "a")
    slots.give_back(peer, "a")  # twice: no harm
    slots.give_back(Peer("other", "x", Role.CLIENT, "c1", ("127.0.0.1", 2)), "c")  # never taken
    assert slots.count("abcd") == 1 and slots.refusal(peer, ALPN_CLIENT) is None
    slots.give_back(same_key_elsewhere, "b")
    assert slots.count("abcd") == 0 and not slots._held
    assert IdentitySlots(0).refusal(peer, ALPN_CLIENT) is None  # 0: no limit
    with pytest.raises(ValueError, match=">= 0"):
        IdentitySlots(-1)
