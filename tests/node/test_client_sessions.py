"""A write's `ack` tells the node which of the session's results it may forget: those below
the oldest write of this client still waiting for its answer (client/client.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from client_fakes import FakeConnection

from quicraft.client import Client, ClientError
from quicraft.client import client as client_module
from quicraft.client.channel import Channel, Retry
from quicraft.client.client import SEQ_WINDOW, Attempts
from quicraft.statemachine import DEFAULT_MAX_RESULTS, KVStore, encode_command
from quicraft.wire.client import decode_request, encode_response


def test_each_write_acknowledges_below_the_oldest_write_still_waiting() -> None:
    async def scenario() -> None:
        client = Client([("10.0.0.1", 7400)], cast(Any, None))  # never connects here
        client._session = 7
        sent: list[dict[str, Any]] = []
        answers: dict[int, asyncio.Future[dict[str, Any]]] = {}

        async def call(
            op: str,
            args: dict[str, Any],
            deadline: float | None = None,
            attempts: Attempts | None = None,
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
        self,
        op: str,
        args: dict[str, Any],
        deadline: float | None = None,
        attempts: Attempts | None = None,
    ) -> dict[str, Any]:
        attempts = Attempts() if attempts is None else attempts
        attempts.maybe_proposed += 1
        result = self.apply(op, args)
        if self.lose is not None and args.get("seq") == self.lose:
            await self.release.wait()  # the answer was lost: the client retries after a while
            attempts.maybe_proposed += 1
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


def test_a_write_that_gave_up_waiting_for_the_window_is_not_woken_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write that times out waiting for the window leaves its place among the waiting
    behind: the write that ends next, with none left in flight, wakes nobody and ends well
    (a first version of the wake-up in seq order looked for an oldest write there was not)."""
    monkeypatch.setattr(client_module, "SEQ_WINDOW", 1)

    async def scenario() -> None:
        cluster = _Cluster(KVStore(), lose=1)
        client = Client([("10.0.0.1", 7400)], cast(Any, None), timeout=0.05)
        client.call = cluster.call  # type: ignore[method-assign]
        first = asyncio.create_task(client.kv.incr("n"))
        await asyncio.sleep(0.01)
        with pytest.raises(ClientError, match="this one was not sent") as caught:
            await client.kv.set("k", b"v")
        assert caught.value.code == "timeout"
        cluster.release.set()
        assert await first == 1
        assert "k" not in cluster.store.keys("")

    asyncio.run(scenario())


def test_a_write_refused_for_an_idle_session_goes_again_under_a_new_one() -> None:
    """A client idle for longer than the session timeout: its next write is refused by the
    log, so not applied, and is sent again under a new session. Before, the caller got
    session_expired for the first write after every idle spell."""

    async def scenario() -> None:
        cluster = _Cluster(KVStore(session_timeout_ms=1000))
        client = Client([("10.0.0.1", 7400)], cast(Any, None))  # never connects here
        client.call = cluster.call  # type: ignore[method-assign]
        await client.kv.set("a", b"1")
        cluster.ts_ms = 5000  # idle for 5 s
        assert await client.kv.incr("n") == 1
        ops = [(op, args.get("session"), args.get("seq")) for op, args in cluster.applied]
        assert ops == [
            ("register", None, None), ("set", 1, 1),
            ("incr", 1, 2),  # refused: session 1 expired
            ("register", None, None), ("incr", 4, 3),
        ]  # fmt: skip
        assert cluster.store.get("n") == (b"1", 5)

    asyncio.run(scenario())


def test_a_retried_write_refused_for_an_expired_session_is_not_sent_again() -> None:
    """Its first attempt may have been applied (here it was) before the session expired: the
    caller is told session_expired, and the write is not applied a second time."""

    async def scenario() -> None:
        cluster = _Cluster(KVStore(session_timeout_ms=1000), lose=1)
        client = Client([("10.0.0.1", 7400)], cast(Any, None))  # never connects here
        client.call = cluster.call  # type: ignore[method-assign]
        write = asyncio.create_task(client.kv.incr("n"))
        await asyncio.sleep(0.01)  # applied; its answer lost
        cluster.ts_ms = 5000
        cluster.release.set()
        with pytest.raises(ClientError) as raised:
            await write
        assert raised.value.code == "session_expired"
        assert cluster.store.get("n") == (b"1", 2)
        assert client._session is None  # the next write registers a new session

    asyncio.run(scenario())


class _Scripted:
    """A request stream whose node answers each request with the next code of a script
    shared by all its streams ("ok", an error code, or "silent": no answer at all)."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def write_frame(self, frame: bytes) -> None:
        request_id, code = decode_request(frame).id, self.script.pop(0)
        if code == "ok":
            self._inbox.put_nowait(encode_response(ok=True, result={}, id=request_id))
        elif code != "silent":
            error = {"code": code, "message": code}
            self._inbox.put_nowait(encode_response(ok=False, error=error, id=request_id))

    async def read_frame(self) -> bytes | None:
        return await self._inbox.get()


@pytest.mark.parametrize(
    ("script", "maybe_proposed"),
    [
        (["session_expired"], 1),
        (["not_leader", "no_leader", "session_expired"], 1),  # those two proposed nothing
        (["silent", "session_expired"], 2),  # the first, unanswered, may have been
        (["unavailable", "session_expired"], 2),  # its entry may yet be committed
        (["timeout", "ok"], 2),
    ],
)
def test_a_call_counts_the_attempts_that_may_have_been_proposed(
    monkeypatch: pytest.MonkeyPatch, script: list[str], maybe_proposed: int
) -> None:
    monkeypatch.setattr(client_module, "ATTEMPT_S", 0.05)
    monkeypatch.setattr(Retry, "pause", lambda retry: asyncio.sleep(0))

    async def open_fake(address: Any, identity: Any, codec: Any) -> Channel[Any]:
        return Channel(cast(Any, FakeConnection()), cast(Any, _Scripted(script)), codec)

    monkeypatch.setattr(Channel, "open", staticmethod(open_fake))

    async def scenario() -> None:
        client = Client([("10.0.0.1", 7400), ("10.0.0.2", 7400)], cast(Any, None))
        attempts = Attempts()
        args = {"key": "k", "value": b"v", "session": 1, "seq": 1}
        try:
            await client.call("set", args, None, attempts)
        except ClientError as err:
            assert err.code == "session_expired"
        finally:
            client._link.drop("test over")
        assert attempts.maybe_proposed == maybe_proposed
        assert script == []

    asyncio.run(asyncio.wait_for(scenario(), 10.0))
