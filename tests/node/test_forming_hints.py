"""mDNS hints on a node that is forming (node/lan.py): what it dials for an announcement, and
how many dials an announcer can make it run. The announcements are fed to the node directly
(mDNS off), as discovery would report them.

Found by an audit of discovery (2026-12-03): only the first announced address of a peer was
ever dialed, so a peer announcing an address this node cannot reach first (a second
interface: a container bridge, another LAN) was never verified, though it announced a good
one too; and every announced node id got a dial loop of its own, so anyone on the LAN
announcing many ids made the node hold as many UDP sockets and dials at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from inprocess import nodes_in, until
from test_forming_relay import deciding, stop_waiting

from quicraft.discovery import DiscoveredPeer, PeerEvent, PeerEventKind
from quicraft.node import lan
from quicraft.transport import TransportError
from quicraft.transport.address import Address


def announced(node_id: str, port: int, hosts: tuple[str, ...]) -> PeerEvent:
    peer = DiscoveredPeer(node_id, "x", "c1", (hosts[0], port), None, 1, hosts, "x-1")
    return PeerEvent(PeerEventKind.DISCOVERED, peer)


def test_a_peer_is_verified_at_any_address_it_announces(tmp_path: Path) -> None:
    """c announces 127.0.0.2 first, where nothing listens (it serves on 127.0.0.1 only), then
    its real address: a verifies it there."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "ac") as nodes:
            a, c = deciding(nodes, "a"), deciding(nodes, "c")
            starting = [asyncio.ensure_future(n.start()) for n in (a, c)]
            try:
                await until(lambda: a.lan is not None and a.lan.seeing is not None)
                assert a.lan is not None
                port = nodes.address("c")[1]
                a.lan._on_event(announced(c.id, port, ("127.0.0.2", "127.0.0.1")))
                await until(lambda: c.id in a.lan.verified, timeout=10)
                assert a.lan.verified[c.id].address == ("127.0.0.1", port)
                assert a.pool.connection(c.id) is not None
            finally:
                await stop_waiting(starting)

    asyncio.run(scenario())


def test_announcements_of_many_node_ids_dial_a_bounded_few_at_a_time(tmp_path: Path) -> None:
    """200 node ids announced at once: never more than lan.MAX_VERIFYING dials run together,
    and the dials go on (each id is tried, then retried with backoff)."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "a") as nodes:
            a = deciding(nodes, "a")
            starting = [asyncio.ensure_future(a.start())]
            try:
                await until(lambda: a.lan is not None and a.lan.seeing is not None)
                assert a.lan is not None
                running, most, tried = 0, 0, set()

                async def dial(address: Address, expect: str | None = None) -> str:
                    nonlocal running, most
                    running += 1
                    most = max(most, running)
                    tried.add(expect)
                    try:
                        await asyncio.sleep(0.01)  # a dial that times out, shortened
                        raise TransportError("nothing answers")
                    finally:
                        running -= 1

                a.pool.dial = dial  # type: ignore[method-assign]
                for n in range(200):
                    a.lan._on_event(announced(f"{n:016x}", 7400, ("10.9.9.9", "10.9.9.8")))
                await until(lambda: len(tried) == 200, timeout=10)
                assert 0 < most <= lan.MAX_VERIFYING
                assert len(a.lan._verifying) == 200  # every id is still retried
            finally:
                await stop_waiting(starting)

    asyncio.run(scenario())
