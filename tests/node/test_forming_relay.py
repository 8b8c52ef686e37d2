"""Relayed dials while forming on a LAN: a deciding node's hello says where it reaches the
nodes it sees (`seen_at`), and the receiver dials them (node/lan.py). Found by a review of
the first version (2026-12-02): a host name the resolver refuses ended the dialing task
with an exception and left it registered, so that node was never dialed again, even at a
good address; and a loopback address relayed by a peer on another host was dialed on this
host."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from inprocess import Nodes, nodes_in, until

from quicraft.discovery import DiscoveredPeer, DiscoverySettings, PeerEvent, PeerEventKind
from quicraft.node import Node
from quicraft.transport import TransportError
from quicraft.transport.address import Address, format_address
from quicraft.wire import Hello


def deciding(nodes: Nodes, name: str, expect: int = 5, seed: str | None = None) -> Node:
    join = () if seed is None else (nodes.address(seed),)
    quiet = DiscoverySettings(enabled=False, join=join)
    return nodes.node(name, discovery=quiet, expect=expect, lan=True)


def relaying(sender: str, seen: set[str], seen_at: dict[str, str]) -> Hello:
    """A hello as a deciding node says it (built here, so the wire's checks are bypassed)."""
    return Hello(sender, False, None, seen=tuple(sorted(seen)), seen_at=seen_at)


async def stop_waiting(starting: Sequence[asyncio.Future[None]]) -> None:
    for start in starting:
        start.cancel()  # a start waits for a forming verdict that expect=5 never gives
    await asyncio.gather(*starting, return_exceptions=True)


@asynccontextmanager
async def a_joined_to_b(tmp_path: Path) -> AsyncIterator[tuple[Nodes, Node, Node, Node]]:
    """Deciding nodes a, b and c, a given --join b and c alone: (nodes, a, b, c) once a
    is connected to b."""
    async with nodes_in(tmp_path, "abc") as nodes:
        b = deciding(nodes, "b")
        a, c = deciding(nodes, "a", seed="b"), deciding(nodes, "c")
        starting = [asyncio.ensure_future(n.start()) for n in (a, b, c)]
        try:
            await until(lambda: a.lan is not None and a.pool.connection(b.id) is not None)
            yield nodes, a, b, c
        finally:
            await stop_waiting(starting)


def b_says_where_it_sees_c(nodes: Nodes, a: Node, b: Node, c: Node, where: str) -> None:
    """a hears a hello from b saying that b reaches c at `where`."""
    assert a.lan is not None
    sender = format_address(nodes.address("b"))
    hello = relaying(sender, {a.id, b.id, c.id}, {c.id: where})
    a.lan.heard_hello(b.id, "b", nodes.address("b"), hello)


def test_a_relayed_host_the_resolver_refuses_does_not_stop_later_dials(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with a_joined_to_b(tmp_path) as (nodes, a, b, c):
            b_says_where_it_sees_c(nodes, a, b, c, "a..b:7400")  # IDNA: an empty label
            await asyncio.sleep(1)  # the dial fails at once: no such name
            b_says_where_it_sees_c(nodes, a, b, c, format_address(nodes.address("c")))
            await until(lambda: a.pool.connection(c.id) is not None, timeout=5)

    asyncio.run(scenario())


def test_a_loopback_address_relayed_from_another_host_is_dialed_at_that_host(
    tmp_path: Path,
) -> None:
    """Peer p, on 192.0.2.7 as this node reaches it, reaches node x over its own loopback.
    Nothing is sent: p's connection and the dials are stand-ins that record."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "ap") as nodes:
            a = deciding(nodes, "a")
            starting = [asyncio.ensure_future(a.start())]
            try:
                await until(lambda: a.lan is not None and a.lan.seeing is not None)
                assert a.lan is not None
                p, x = nodes.id_of("p"), "f" * 16
                dialed: list[tuple[Address, str | None]] = []

                async def record(address: Address, expect: str | None = None) -> str:
                    dialed.append((address, expect))
                    raise TransportError("not dialed in this test")

                real = a.pool.connection
                a.pool.connection = lambda n: object() if n == p else real(n)  # type: ignore[assignment, return-value]
                a.pool.dial = record  # type: ignore[method-assign]
                hello = relaying("192.0.2.7:7400", {p, x}, {x: "127.0.0.1:7401"})
                a.lan.heard_hello(p, "p", ("192.0.2.7", 7400), hello)
                await until(lambda: bool(dialed))
                assert dialed[0] == (("192.0.2.7", 7401), x)
                assert all(host == "192.0.2.7" for (host, _), _ in dialed)
            finally:
                await stop_waiting(starting)

    asyncio.run(scenario())


def test_a_relayed_address_is_dialed_while_an_announced_one_is_still_being_verified(
    tmp_path: Path,
) -> None:
    """mDNS announces c at an address that never answers, and verifying it retries with
    backoff; a deciding peer's hello then says where it reaches c. The relayed dial was
    skipped while that verification ran (both were kept under c's id), so this node never
    reached c (found by reading, 2026-12-02)."""

    async def scenario() -> None:
        async with a_joined_to_b(tmp_path) as (nodes, a, b, c):
            assert a.lan is not None
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                nobody = s.getsockname()  # closed again: nothing answers there
            announced = DiscoveredPeer(c.id, "c", "t1", nobody, None, 1)
            a.lan._on_event(PeerEvent(PeerEventKind.DISCOVERED, announced))
            await asyncio.sleep(0.3)  # its first attempt has failed; it retries
            b_says_where_it_sees_c(nodes, a, b, c, format_address(nodes.address("c")))
            await until(lambda: a.pool.connection(c.id) is not None, timeout=5)

    asyncio.run(scenario())
