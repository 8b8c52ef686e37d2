"""Founding from static --peers when the --peers do not fit the nodes they name, with real
nodes in this process over loopback QUIC (found by an audit of cluster forming, 2026-12-05)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from inprocess import nodes_in, write_everywhere

from quicraft.node import FoundingError
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
