"""A write's `ack` tells the node which of the session's results it may forget: those below
the oldest write of this client still waiting for its answer (client/client.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from quicraft.client import Client


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
