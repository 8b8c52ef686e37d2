"""A synchronous wrapper for scripts: the same key-value operations, each run to completion.

    with quicraft.connect_sync(endpoints="127.0.0.1:7401", cluster="c1") as c:
        c.kv.set("greeting", "hello")

Rules:
- It runs its client in a private event loop (an asyncio.Runner), so it cannot be used from
  inside a running loop: connect_sync and every call refuse at once there, pointing at
  `async with quicraft.connect(...)`.
- Ctrl-C during a call cancels the call, which runs to its end before KeyboardInterrupt
  goes on, as under asyncio.run; so does any other BaseException that stops the loop (a
  signal handler's SystemExit). Nothing of an interrupted call runs later. (A write may have
  been applied already, as with any cancelled write.)
- Calls from several threads take turns: one runs in the private loop at a time (a lock),
  so a thread waiting in events() for its next event holds the others up until it comes.
- Once closed, every call raises ClientError("closed"). close() works anywhere, twice too,
  and from another thread while a call runs: it closes the client in the running loop,
  which ends that call (an events() loop finishes), then the loop.
- A client dropped or left open at exit is closed by a finalizer (its tasks would be
  "destroyed but pending"), with a ResourceWarning as for an unclosed file; it is closed
  from then on, for an events() iterator collected after it too.
- events() is the async subscription stepped one event at a time in the same private loop:
  nothing runs between two steps (no reconnecting, no reading ahead), so a slow script may be
  cut off as a slow subscriber and resume from its last position, missing nothing. Leaving
  the `for` loop, Ctrl-C or closing the client ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import warnings
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from quicraft.transport.address import format_address
from quicraft.wire import Event

from .channel import CLOSED
from .client import Client, ClientError, connect

T = TypeVar("T")

IN_A_LOOP = (
    "the sync client cannot run inside a running event loop; there, use the async client: "
    "`async with quicraft.connect(...) as c: await c.kv.get(...)`"
)


class SyncKV:
    """The key-value operations of `quicraft.client.kv.KV`, each run to completion: each
    raises what its KV method raises, RuntimeError inside a running event loop, and
    ClientError closed once the client is closed."""

    def __init__(self, owner: SyncClient):
        self._owner = owner
        self._kv = owner.client.kv

    def set(self, key: str, value: bytes | str) -> int:
        """Store `value` under `key`; returns the revision (log index) of the write. Raises
        as KV.set."""
        return self._owner.run(self._kv.set(key, value))

    def get(self, key: str, *, stale: bool = False) -> bytes | None:
        """The value of `key`, or None. Linearizable unless `stale`, which reads the
        contacted node's state at once (possibly behind the leader). Raises as KV.get."""
        return self._owner.run(self._kv.get(key, stale=stale))

    def get_with_revision(self, key: str, *, stale: bool = False) -> tuple[bytes | None, int]:
        """The value of `key` and the revision that last changed it (0 if there is no such key:
        never set, or deleted). Raises as KV.get_with_revision."""
        return self._owner.run(self._kv.get_with_revision(key, stale=stale))

    def delete(self, key: str) -> bool:
        """Remove `key`; True if it existed. Raises as KV.delete."""
        return self._owner.run(self._kv.delete(key))

    def incr(self, key: str, by: int = 1) -> int:
        """Add `by` to the integer stored at `key` (0 if absent); returns the new value.
        Raises as KV.incr."""
        return self._owner.run(self._kv.incr(key, by))

    def cas(self, key: str, expected: bytes | str | None, new: bytes | str) -> bool:
        """Set `key` to `new` only if it holds `expected` (None: only if absent); True if it
        did. Raises as KV.cas."""
        return self._owner.run(self._kv.cas(key, expected, new))

    def cas_with_revision(
        self, key: str, expected: bytes | str | None, new: bytes | str
    ) -> tuple[bool, int]:
        """cas, and the revision of that write: when it swapped, a fencing token that grows
        with every later change of the key (examples/lock_and_election.py). Raises as
        KV.cas_with_revision."""
        return self._owner.run(self._kv.cas_with_revision(key, expected, new))

    def keys(self, prefix: str = "", *, stale: bool = False) -> list[str]:
        """The keys that start with `prefix`, sorted. Raises as KV.keys."""
        return self._owner.run(self._kv.keys(prefix, stale=stale))


class SyncClient:
    """A Client run in a private event loop (see the module rules); `quicraft.connect_sync`
    makes one. `kv` holds the operations (SyncKV); use it with `with` (or close() it)."""

    def __init__(self, client: Client):
        self.client = client
        # Its own loop, not set as the thread's current loop. Made now, not on first use:
        # a thread closing the client must find the loop another thread's call runs.
        self._runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        self._runner.get_loop()
        self._closed = False
        self._turn = threading.Lock()  # held by the thread whose call runs the loop
        self._finalizer = weakref.finalize(self, _close_unclosed, self._runner, client)
        self.kv = SyncKV(self)

    @property
    def current_endpoint(self) -> str:
        """The node this client talks to now ("HOST:PORT"); after a write, the leader."""
        return self.client.current_endpoint

    def events(
        self,
        kinds: Iterable[str] | None = None,
        prefix: str | None = None,
        since: int | None = None,
    ) -> Iterator[Event]:
        """The cluster's events after position `since` (None: from now), as they happen:
        `Client.events` as a plain iterator. Arguments every node would refuse raise
        InvalidRequest here, at once; it ends when the loop over it stops, when the client
        is closed, or with a ClientError (bad_request, forbidden, compacted)."""
        if self._closed:
            raise ClientError("closed", CLOSED)
        return self._step_through(self.client.events(kinds, prefix, since))

    def _step_through(self, subscription: AsyncGenerator[Event, None]) -> Iterator[Event]:
        try:
            while not self._closed:
                try:
                    yield self.run(_next(subscription))
                except StopAsyncIteration:
                    return
        finally:
            # Left mid-way (a break, Ctrl-C, an error): end the subscription and its
            # connection now rather than when the loop closes. A closed client ended it
            # (closed meanwhile by another thread, `run` says so: nothing is left to do).
            if not self._closed and not _in_a_running_loop():
                with contextlib.suppress(ClientError):
                    self.run(_close(subscription))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run one of the client's coroutines to its end in the private loop; its result.
        Raises what it raises, ClientError closed once closed, and RuntimeError inside a
        running event loop."""
        try:
            # Closed, or by its finalizer at exit (a script that did not close it: its events
            # iterator, collected after, must find it closed, not its loop gone).
            if self._closed or not self._finalizer.alive:
                raise ClientError("closed", CLOSED)
            refuse_in_a_running_loop()
            self._turn.acquire()  # another thread's call first (Ctrl-C interrupts the wait)
        except BaseException:
            coroutine.close()  # never started: no "never awaited" warning
            raise
        try:
            if self._closed:  # by another thread, while this one waited
                coroutine.close()
                raise ClientError("closed", CLOSED)
            return self._run(coroutine)
        finally:
            self._turn.release()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            return self._runner.run(coroutine)
        except BaseException:
            # The Runner cancels the call on Ctrl-C; anything else that stopped the loop
            # (a signal handler's SystemExit, KeyboardInterrupt from a handler of the
            # program's own) left it pending: cancel it and run it to its end here.
            loop = self._runner.get_loop()
            left = [t for t in asyncio.all_tasks(loop) if t.get_coro() is coroutine]
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.wait(left))
            raise

    def close(self) -> None:
        """Close the client and its loop; harmless twice, inside a running event loop (the
        private loop then finishes in a thread of its own), and while another thread's
        call runs (which it ends)."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        if not self._turn.acquire(blocking=False):
            # Another thread's call runs the loop: closing the client there ends that call
            # (an events() step returns, a request fails with closed); the loop is ours next.
            loop, client = self._runner.get_loop(), self.client
            closing: list[asyncio.Task[None]] = []  # a reference, until it is over
            loop.call_soon_threadsafe(lambda: closing.append(loop.create_task(client.close())))
            self._turn.acquire()
        try:
            _finish(self._runner, self.client)
        finally:
            self._turn.release()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _finish(runner: asyncio.Runner, client: Client) -> None:
    """Close `client` in its private loop, then the loop; in a thread of its own if this one
    runs an event loop (the private one cannot run inside it)."""

    def finish() -> None:
        try:
            runner.run(client.close())
        finally:
            runner.close()  # cancels what is left, as asyncio.run does

    if not _in_a_running_loop():
        finish()
        return
    thread = threading.Thread(target=finish, name="quicraft-sync-close")
    thread.start()
    thread.join()


def _close_unclosed(runner: asyncio.Runner, client: Client) -> None:
    """A SyncClient's finalizer: it was not closed. Warn after closing, so that a filter
    that makes the warning an error cannot leave it open."""
    try:
        _finish(runner, client)
    finally:
        where = ",".join(format_address(a) for a in client.endpoints)
        warnings.warn(
            f"unclosed quicraft SyncClient of {where}: close it, or use `with`",
            ResourceWarning,
            stacklevel=1,
        )


async def _next(subscription: AsyncIterator[T]) -> T:
    return await anext(subscription)  # Runner.run takes a coroutine, not any awaitable


async def _close(subscription: AsyncGenerator[Event, None]) -> None:
    await subscription.aclose()


def refuse_in_a_running_loop() -> None:
    if _in_a_running_loop():
        raise RuntimeError(IN_A_LOOP)


def _in_a_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def connect_sync(
    endpoints: Sequence[str] | str,
    cluster: str,
    certs: str | Path = "certs",
    name: str = "admin",
    timeout: float = 10.0,
) -> SyncClient:
    """Like `quicraft.connect`, for code without an event loop; it raises the same errors. The
    same `kv` operations, `events()` and `current_endpoint`, each call run to completion.
    Inside a running event loop it raises RuntimeError: use `async with quicraft.connect(...)`."""
    refuse_in_a_running_loop()
    return SyncClient(connect(endpoints, cluster, certs, name, timeout))
