"""A keys answer too big to send: the node says so (bad_request), and the stream goes on.

Before, a prefix whose keys took more than a frame (16 MiB) made the node fail as it wrote
the answer: a stale read reset the client's stream (every request on it failed), a
linearizable one logged a traceback and never answered, and the client gave up after its
timeout with "is the cluster running there?"."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from inprocess import CLUSTER, Nodes, leader_of, nodes_in, until

from quicraft.client import Client, ClientError, connect
from quicraft.wire import ops

LONG = 4000  # bytes per key: 4,200 of them take more than a frame


async def _single_node(nodes: Nodes) -> Client:
    node = nodes.node("n1")
    await node.start()
    await until(lambda: leader_of([node]) is not None)
    return connect([f"127.0.0.1:{nodes.ports['n1']}"], CLUSTER, nodes.certs, "admin", timeout=5)


async def _fill(client: Client, keys: list[str]) -> None:
    todo = iter(keys)

    async def writer() -> None:
        for key in todo:
            await client.kv.set(key, b"")

    await asyncio.gather(*(writer() for _ in range(64)))


@pytest.mark.parametrize("stale", [True, False])
def test_keys_that_take_more_than_a_frame_are_refused_at_once(tmp_path: Path, stale: bool) -> None:
    async def scenario() -> None:
        async with nodes_in(tmp_path, ["n1"]) as nodes, await _single_node(nodes) as client:
            keys = [f"L/{i:06}".ljust(LONG, "p") for i in range(ops.MAX_KEYS_BYTES // LONG + 10)]
            await _fill(client, keys)
            started = time.monotonic()
            with pytest.raises(ClientError) as caught:
                await client.kv.keys("L/", stale=stale)
            assert caught.value.code == "bad_request"
            assert f"the {len(keys):,} keys that start with 'L/' take" in str(caught.value)
            assert "more than an answer may carry" in str(caught.value)
            assert time.monotonic() - started < 2  # answered, not given up on
            # The same client, on the same stream, goes on.
            assert await client.kv.keys("L/00000", stale=stale) == keys[:10]

    asyncio.run(scenario())


def test_more_keys_than_an_answer_may_list_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The count bound, scaled down: the client reads the same bound, as in a real pair.
    monkeypatch.setattr(ops, "MAX_KEYS", 5)

    async def scenario() -> None:
        async with nodes_in(tmp_path, ["n1"]) as nodes, await _single_node(nodes) as client:
            await _fill(client, [f"k{i}" for i in range(6)])
            with pytest.raises(ClientError) as caught:
                await client.kv.keys("k")
            assert caught.value.code == "bad_request"
            assert "6 keys start with 'k', more than an answer may list" in str(caught.value)
            await client.kv.delete("k5")
            assert await client.kv.keys("k") == [f"k{i}" for i in range(5)]

    asyncio.run(scenario())
