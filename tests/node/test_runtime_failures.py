"""How the runtime ends when something under it fails: a state machine that raises or gives
back what cannot be stored, a storage write that fails, a failure while stopping. Each ends
run() with one clear error and leaves no request waiting. One node, in-memory storage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from quicraft.node import NodeStopped, RaftNode, Timings
from quicraft.statemachine import KVStore, encode_command
from quicraft.storage import MemoryStorage

FAST = Timings(tick_ms=5, election_tick=10, heartbeat_tick=2, snapshot_every=10_000)
#: No tick within a test: only what the test hands the node happens.
SLOW = Timings(tick_ms=1000, election_tick=10, heartbeat_tick=2, snapshot_every=10_000)


def command(key: str, value: bytes) -> bytes:
    return encode_command("set", {"key": key, "value": value}, ts_ms=1)


async def a_leader(node: RaftNode) -> asyncio.Task[None]:
    """Run `node`, founded as a cluster of one, until it leads; its run() task."""
    node.open(node.storage.load(), founders=[node.id])
    running = asyncio.create_task(node.run())
    while node.core is None or node.core.leader != node.id:
        await asyncio.sleep(0.005)
    return running


class CannotCapture(KVStore):
    def capture(self) -> Callable[[], bytes]:
        raise RuntimeError("the state cannot be copied")


def test_a_snapshot_request_fails_when_the_state_machine_cannot_snapshot() -> None:
    """Found by an audit: a capture() (or snapshot()) that raised ended run(), but the
    snapshot() call that asked for it had already been taken off the requests that run()
    fails when it ends, and waited for ever."""

    async def scenario() -> None:
        node = RaftNode("a", MemoryStorage(), CannotCapture(), FAST, lambda m, tp: None)
        running = await a_leader(node)
        await node.propose(command("k", b"v"), 5)
        asked = asyncio.ensure_future(node.snapshot())
        with pytest.raises(RuntimeError, match="cannot be copied"):
            await asyncio.wait_for(running, 5)
        with pytest.raises(NodeStopped):
            await asyncio.wait_for(asked, 5)

    asyncio.run(scenario())
