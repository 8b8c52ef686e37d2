"""A write's `ack` tells the node which of the session's results it may forget: those below
the oldest write of this client still waiting for its answer (client/client.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from quicraft.client import Client, ClientError
from quicraft.client import client as client_module
from quicraft.client.client import SEQ_WINDOW
from quicraft.statemachine import DEFAULT_MAX_RESULTS, KVStore, encode_command


def test_each_write_acknowledges_below_the_oldest_write_still_waiting() -> None:
    async def scenario() -> None:
        client = Client([("10.0.0.1", 7400)], cast(Any, None))  # never connects here
        client._session = 7
        sent: list[dict[str, Any]] = []
        answers: dict[int, asyncio.Future[dict[str, Any]]] = {}

        async def call(
            op: str, args: dict[str, Any], deadline: float | None = None
        ) -> dict[str, Any]:
            sent.append(args)
            answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            answers[args["seq"]] = answer
            return await answer

        client.call = call  # type: ignore[method-assign]
        writes: dict[int, asyncio.Task[dict[str, Any]]] = {}

        async def write(seq: int) -> None:
            writes[seq] = asyncio.create_task(client.write("set", {"key": f"k{seq}"}))
            await asyncio.sleep(0)  # it has sent its request

        async def answer(seq: int) -> None:
            answers[seq].set_result({"revision": seq})
            await writes[seq]

        for seq in (1, 2, 3):
            await write(seq)
        await answer(1)
        await write(4)  # 2, 3 and 4 wait
        await answer(3)
        await write(5)  # 2, 4 and 5 wait
        await answer(2)
        await write(6)  # 4, 5 and 6 wait
        assert [(a["seq"], a["ack"]) for a in sent] == [
            (1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 4)
        ]  # fmt: skip
        assert all(a["session"] == 7 and a["key"] == f"k{a['seq']}" for a in sent)
        for seq in (4, 5, 6):
            await answer(seq)

    asyncio.run(scenario())


class _Cluster:
    """A client's `call` that applies its writes to a real store, as one leader would; the
    first attempt of one seq is applied but its answer lost, the client retrying it once
    `release` is set."""

    def __init__(self, store: KVStore, lose: int | None = None) -> None:
        self.store = store
        self.index = 0
        self.ts_ms = 0
        self.lose = lose
        self.release = asyncio.Event()
        self.applied: list[tuple[str, dict[str, Any]]] = []

    def apply(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        self.applied.append((op, args))
        return self.store.apply(self.index, encode_command(op, args, self.ts_ms))

    async def call(
        self, op: str, args: dict[str, Any], deadline: float | None = None
    ) -> dict[str, Any]:
        result = self.apply(op, args)
        if args.get("seq") == self.lose:
            await self.release.wait()  # the answer was lost: the client retries after a while
            result = self.apply(op, args)
        if "error" in result:
            raise ClientError(str(result["error"]), str(result["message"]))
        return result


def test_the_window_matches_the_results_a_node_keeps() -> None:
    assert SEQ_WINDOW == DEFAULT_MAX_RESULTS


def test_newer_writes_wait_rather_than_push_out_the_result_of_one_awaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write whose answer was lost keeps its result on the node until its retry comes, however
    many newer writes the client has: beyond the window they wait (before, they pushed the
    first write's result out and its retry failed with bad_request, though it was applied)."""
    monkeypatch.setattr(client_module, "SEQ_WINDOW", 4)

    async def scenario() -> None:
        cluster = _Cluster(KVStore(max_results_per_session=4), lose=1)
        client = Client([("10.0.0.1", 7400)], cast(Any, None))  # never connects here
        client.call = cluster.call  # type: ignore[method-assign]
        first = asyncio.create_task(client.kv.incr("n"))
        await asyncio.sleep(0.01)  # registered, and its increment applied
        others = [asyncio.create_task(client.kv.set(f"k{i}", b"v")) for i in range(6)]
        await asyncio.sleep(0.01)
        # Seqs 2 to 4 went; 5 to 7 wait: each is 4 or more above seq 1, still awaited.
        assert [args.get("seq") for _, args in cluster.applied] == [None, 1, 2, 3, 4]
        cluster.release.set()
        assert await first == 1
        await asyncio.gather(*others)
        assert cluster.store.get("n")[0] == b"1"
        assert len(cluster.store) == 7

    asyncio.run(scenario())
