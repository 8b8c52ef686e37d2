"""How the runtime ends when something under it fails: a state machine that raises or gives
back what cannot be stored, a storage write that fails, a failure while stopping. Each ends
run() with one clear error and leaves no request waiting. One node, in-memory storage."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from typing import Any

import pytest

from quicraft.core import Membership, Message, MessageType, Snapshot, SnapshotMeta
from quicraft.node import NodeStopped, RaftNode, Timings
from quicraft.statemachine import KVStore, encode_command
from quicraft.storage import CorruptionError, MemoryStorage, StorageError

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


class FillsUp(MemoryStorage):
    """Storage whose disk fills while it compacts: the compaction fails, and so does every
    write after it."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False
        self.compacting, self.go_on = threading.Event(), threading.Event()

    def save(self, **write: Any) -> None:
        if self.full:
            raise StorageError("mem: write failed: No space left on device")
        super().save(**write)

    def compact(self, snapshot: Snapshot) -> None:
        self.compacting.set()
        self.go_on.wait(5)
        raise StorageError("mem: write failed: No space left on device")


def test_a_snapshot_under_way_when_a_write_fails_leaves_no_error_unseen() -> None:
    """Found by an audit: a full disk failed a write and the compaction queued with it; the
    write's error stopped the node, and the compaction's, which nobody awaited any more, was
    printed at exit as a traceback ("Future exception was never retrieved") under the one
    line `quicraft node` gives."""
    unseen: list[str] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: unseen.append(context["message"])
        )
        storage = FillsUp()
        node = RaftNode("a", storage, KVStore(), FAST, lambda m, tp: None)
        running = await a_leader(node)
        await node.propose(command("k", b"v"), 5)
        asked = asyncio.ensure_future(node.snapshot())
        await asyncio.to_thread(storage.compacting.wait, 5)
        storage.full = True
        write = node.start_proposal(command("k", b"w"), 5)
        await asyncio.sleep(0.05)  # its write waits behind the compaction
        storage.go_on.set()
        with pytest.raises(StorageError, match="No space left"):
            await asyncio.wait_for(running, 5)
        for request in (asked, write):
            with pytest.raises(NodeStopped):
                await request
        await asyncio.sleep(0.05)  # the compaction's outcome reaches the loop
        del node, running  # as at the process's exit
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert unseen == []


class Minimal:
    """A state machine with only what the protocol asks: no capture(), no prepare()."""

    def __init__(self, snapshot: object = b"") -> None:
        self.state = b""
        self.gives = snapshot  # what snapshot() returns

    def apply(self, index: int, data: bytes) -> object:
        self.state += data
        return None

    def snapshot(self) -> bytes:
        return self.gives  # type: ignore[return-value]  # what a faulty one gives

    def restore(self, data: bytes) -> None:
        if not data.startswith(b"mine:"):
            raise ValueError("not a snapshot of mine")
        self.state = data


def test_a_follower_without_prepare_stops_on_a_snapshot_it_cannot_read_with_a_message() -> None:
    """Found by an audit: a state machine without prepare() is restored on the loop, outside
    the check that turns its ValueError into the CorruptionError naming the snapshot (which
    open() gives for the same snapshot once stored): the node stopped with the bare
    ValueError, which `quicraft node` would show as a traceback."""

    async def scenario() -> None:
        state = Minimal()
        node = RaftNode("b", MemoryStorage(), state, SLOW, lambda m, tp: None)
        node.open(node.storage.load(), where="data/b")
        running = asyncio.create_task(node.run())
        meta = SnapshotMeta(8, 1, Membership(frozenset({"a", "b"})))
        node.receive(Message(MessageType.SNAPSHOT, "b", "a", 1, snapshot=Snapshot(meta, b"x")))
        with pytest.raises(CorruptionError) as refused:
            await asyncio.wait_for(running, 5)
        assert str(refused.value) == (
            "data/b: snapshot at 8 from the leader: the state machine cannot read it "
            "(not a snapshot of mine)"
        )
        assert state.state == b""

    asyncio.run(scenario())


@pytest.mark.parametrize("gives", ["text", None, bytearray(b"mine:")])
def test_a_snapshot_that_is_not_bytes_stops_the_node_saying_so(gives: object) -> None:
    """Found by an audit: a snapshot() that returned a str or None was stored as the
    snapshot by in-memory storage (and a bytearray, which its state machine may change
    later, by either), and LevelDB storage failed on it with `memoryview: a bytes-like
    object is required`. The node now stops with an error that says what was wrong."""

    async def scenario() -> None:
        node = RaftNode("a", MemoryStorage(), Minimal(gives), FAST, lambda m, tp: None)
        running = await a_leader(node)
        await node.propose(b"mine:1", 5)
        asked = asyncio.ensure_future(node.snapshot())
        with pytest.raises(TypeError) as refused:
            await asyncio.wait_for(running, 5)
        assert str(refused.value) == (
            f"the state machine's snapshot is a {type(gives).__name__}, not bytes"
        )
        with pytest.raises(NodeStopped):
            await asyncio.wait_for(asked, 5)
        assert node.storage.load().snapshot.meta.index == 0

    asyncio.run(scenario())


def test_a_failure_just_before_a_stop_still_ends_run_with_its_error() -> None:
    """Found by an audit: the loop looked at stop() before at fail(), so a failure (a full
    disk writing the node's metadata, say) followed at once by a stop (the SIGTERM that
    came with it) ended run() normally, and `quicraft node` exited 0."""

    async def scenario() -> None:
        node = RaftNode("a", MemoryStorage(), KVStore(), FAST, lambda m, tp: None)
        running = await a_leader(node)
        node.fail(StorageError("disk gone"))
        node.stop()
        with pytest.raises(StorageError, match="disk gone"):
            await asyncio.wait_for(running, 5)

    asyncio.run(scenario())
