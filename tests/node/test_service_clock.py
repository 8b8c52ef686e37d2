"""The leader's clock in the commands it proposes: what every replica's state machine reads."""

from __future__ import annotations

import asyncio
import time

import pytest

from quicraft.core import EntryType
from quicraft.node import RaftNode, Timings
from quicraft.node.service import ClientService, RequestFailed
from quicraft.statemachine import KVStore
from quicraft.storage import MemoryStorage
from quicraft.transport import Role
from quicraft.wire import decode_request, encode_request

FAST = Timings(tick_ms=5, election_tick=10, heartbeat_tick=2, snapshot_every=10_000)


class Replies:
    """What a client stream would send back, kept."""

    def __init__(self) -> None:
        self.answered = asyncio.Event()
        self.results: list[dict[str, object]] = []

    def ok(self, request_id: int, result: dict[str, object]) -> None:
        self.results.append(result)
        self.answered.set()

    def fail(self, request_id: int, err: RequestFailed) -> None:
        raise AssertionError(f"the write failed: {err.code}: {err}")


def test_a_leader_whose_clock_reads_before_1970_proposes_what_followers_apply_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by an audit: the leader stamped its wall clock as it was, applied its own
    command without decoding it, and got a result; a follower decoding the same entry
    refused its negative ts, and held another state. The stamp is now never below 0."""
    monkeypatch.setattr(time, "time", lambda: -5.0)  # what the leader stamps

    async def scenario() -> None:
        kv = KVStore()
        node = RaftNode("a", MemoryStorage(), kv, FAST, lambda m, tp: None)
        node.open(node.storage.load(), founders=["a"])
        running = asyncio.create_task(node.run())
        for _ in range(500):  # a voter alone elects itself within a few ticks
            if node.core is not None and node.core.leader == "a":
                break
            await asyncio.sleep(0.01)
        service = ClientService(node, kv, lambda _: None, 5)
        replies = Replies()
        request = decode_request(encode_request("set", {"key": "k", "value": b"v"}, id=1))
        service.start(Role.CLIENT, request, replies)  # type: ignore[arg-type]
        await asyncio.wait_for(replies.answered.wait(), 5)
        node.stop()
        await running
        follower = KVStore()
        for entry in node.storage.load().entries:
            if entry.type is EntryType.NORMAL:
                follower.apply(entry.index, entry.data)
        assert kv.get("k") == (b"v", replies.results[0]["revision"])
        assert follower.snapshot() == kv.snapshot()

    asyncio.run(scenario())
