"""Hellos between two PeerPools on loopback: what a peer says about where it serves lands in
the address book of the node it dialed, keyed by the peer's authenticated id."""

from __future__ import annotations

import asyncio
from pathlib import Path

from opentelemetry.context import Context

from quicraft.core import Message, NodeId
from quicraft.node.peers import PeerPool
from quicraft.transport import ALPN_RAFT, Role, init_cluster, issue, load_identity, serve
from quicraft.transport.address import Address
from quicraft.wire import Hello

Heard = list[tuple[NodeId, Address, Hello]]


def pool(certs: Path, name: str, says: Hello, heard: Heard) -> PeerPool:
    def ignore(*_args: object) -> None:
        pass

    def deliver(_m: Message, _context: Context | None) -> None:
        pass

    p = PeerPool(load_identity(certs, "c1", name), deliver, ignore, ignore)
    p.hello = lambda _peer: says
    p.on_hello = lambda peer, _name, address, hello: heard.append((peer, address, hello))
    return p


async def exchange(tmp_path: Path, a_says: Hello, b_says: Hello) -> tuple[PeerPool, PeerPool]:
    """b dials a; both say hello; returns (a, b) once each has heard the other."""
    init_cluster(tmp_path, "c1")
    for name in ("a", "b"):
        issue(tmp_path, "c1", name, Role.NODE)
    heard_a: Heard = []
    heard_b: Heard = []
    a, b = pool(tmp_path, "a", a_says, heard_a), pool(tmp_path, "b", b_says, heard_b)
    server = await serve(
        "127.0.0.1", 0, a.identity, {ALPN_RAFT: a.handle_stream}, on_connection=a.adopt
    )
    try:
        assert await b.dial(server.address) == a.id
        async with asyncio.timeout(10):
            while not (heard_a and heard_b):
                await asyncio.sleep(0.01)
    finally:
        await b.close()
        await a.close()
        server.close()
    assert heard_a == [(b.id, a.addresses[b.id], b_says)]
    # (The dialer may hear the hello before its dial returns: where is checked by the tests.)
    assert [(peer, hello) for peer, _, hello in heard_b] == [(a.id, a_says)]
    return a, b


def test_the_dialed_node_learns_where_the_dialer_serves(tmp_path: Path) -> None:
    formed = Hello("192.0.2.7:7400", True, "ab12" * 8)
    a, b = asyncio.run(exchange(tmp_path, formed, Hello("127.0.0.1:7499", False)))
    # The accepted connection came from an ephemeral port: the hello says where to dial back.
    assert a.addresses == {b.id: ("127.0.0.1", 7499)}
    # The dialer keeps the address it dialed (it proved to work), not the one it was told.
    assert b.addresses[a.id][0] == "127.0.0.1" and b.addresses[a.id][1] != 7400


def test_a_wildcard_address_means_the_host_the_connection_came_from(tmp_path: Path) -> None:
    a, b = asyncio.run(
        exchange(tmp_path, Hello("127.0.0.1:1", False), Hello("0.0.0.0:7498", False))
    )
    assert a.addresses == {b.id: ("127.0.0.1", 7498)}
