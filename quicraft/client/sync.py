"""A synchronous wrapper for scripts: the same operations, each run to completion.

    with quicraft.connect_sync(endpoints="127.0.0.1:7401", cluster="c1") as c:
        c.kv.set("greeting", "hello")

It owns a private event loop, so it must not be used from inside a running one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .client import Client, connect

T = TypeVar("T")


class SyncKV:
    def __init__(self, owner: SyncClient):
        self._owner = owner
        self._kv = owner.client.kv

    def set(self, key: str, value: bytes | str) -> int:
        return self._owner.run(self._kv.set(key, value))

    def get(self, key: str, *, stale: bool = False) -> bytes | None:
        return self._owner.run(self._kv.get(key, stale=stale))

    def delete(self, key: str) -> bool:
        return self._owner.run(self._kv.delete(key))

    def incr(self, key: str, by: int = 1) -> int:
        return self._owner.run(self._kv.incr(key, by))

    def cas(self, key: str, expected: bytes | str | None, new: bytes | str) -> bool:
        return self._owner.run(self._kv.cas(key, expected, new))

    def keys(self, prefix: str = "", *, stale: bool = False) -> list[str]:
        return self._owner.run(self._kv.keys(prefix, stale=stale))


class SyncClient:
    def __init__(self, client: Client):
        self.client = client
        self._loop = asyncio.new_event_loop()
        self.kv = SyncKV(self)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coroutine)

    def close(self) -> None:
        if not self._loop.is_closed():
            self.run(self.client.close())
            # Let the tasks the client leaves (a channel's reader and watchdog) see their
            # cancellation, as asyncio.run does: a closed loop cannot, and says so on exit.
            self.run(_cancel_left())
            self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect_sync(
    endpoints: Sequence[str] | str,
    cluster: str,
    certs: str | Path = "certs",
    name: str = "admin",
    timeout: float = 10.0,
) -> SyncClient:
    """Like `quicraft.connect`, for code without an event loop; it raises the same errors."""
    return SyncClient(connect(endpoints, cluster, certs, name, timeout))


async def _cancel_left() -> None:
    """Cancel every other task of the running loop and wait until they have ended."""
    left = asyncio.all_tasks() - {asyncio.current_task()}
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
