"""Founding from static --peers when the --peers do not fit the nodes they name, with real
nodes in this process over loopback QUIC (found by an audit of cluster forming, 2026-12-05)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from inprocess import nodes_in, until, write_everywhere

from quicraft.node import FoundingError, NodeStopped
from quicraft.storage import LevelDBStorage


def test_a_new_node_whose_peer_is_a_member_of_another_cluster_stops_and_says_how_to_join(
    tmp_path: Path,
) -> None:
    """a and b founded {a, b}; c, new, is started with --peers a. a refuses it (not a
    member); c used to log "waiting for founding peer" once a minute and wait for ever."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "abc") as nodes:
            founders = [nodes.node("a", "b"), nodes.node("b", "a")]
            await asyncio.gather(*(n.start() for n in founders))
            await write_everywhere(nodes, "k")
            late = nodes.node("c", "a")
            with pytest.raises(FoundingError, match="--no-bootstrap") as refused:
                await asyncio.wait_for(late.start(), 10)
            assert f"127.0.0.1:{nodes.ports['a']}" in str(refused.value)
            assert late.raft.core is None
            await nodes.stop(late)
            storage = LevelDBStorage(late.settings.data_dir)
            assert storage.load().entries == []  # it founded nothing
            storage.close()

    asyncio.run(scenario())


def test_a_founder_waiting_for_its_peers_sets_stops_when_a_hello_comes_as_it_stops(
    tmp_path: Path,
) -> None:
    """a waits for b's set (b waits for c, which is down). A hello that woke a's wait in the
    same turn of the loop as stop() used to swallow the cancel (asyncio.wait_for of Python
    3.11): a went on waiting, and stop(), SIGTERM included, never returned."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "abc") as nodes:
            a, b = nodes.node("a", "b"), nodes.node("b", "ac")
            starts = [asyncio.create_task(n.start()) for n in (a, b)]
            await until(lambda: a._founders is not None)  # a waits for b's set
            a._news.set()  # as when a hello arrives
            await asyncio.wait_for(nodes.stop(a), 5)
            await nodes.stop(b)
            results = await asyncio.gather(*starts, return_exceptions=True)
            assert all(isinstance(r, NodeStopped) for r in results), results

    asyncio.run(scenario())
