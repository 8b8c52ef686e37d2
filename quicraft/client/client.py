"""The Python client of `quicraft-client/1`: it finds the leader and retries for its caller.

    async with quicraft.connect(endpoints=["127.0.0.1:7401"], cluster="c1") as c:
        revision = await c.kv.set("config/mode", b"fast")
        value = await c.kv.get("config/mode")          # linearizable (ReadIndex)

Writes carry (session, seq) so a write retried after a timeout or a leader change is applied
once and returns its first result (Raft thesis §6.3). A follower answers `not_leader` with the
leader's address and the client goes there; a lost connection moves it to the next endpoint.
Errors that retrying cannot fix (forbidden, bad_request, session_expired) are raised at once;
a node that refuses the connection is passed by, forbidden once every endpoint has (channel.py).

All requests of a client, from however many tasks, share one QUIC connection and one stream
on it (a Channel, channel.py); each carries an id and its response finds it by that id.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.context import get_current
from opentelemetry.trace import SpanKind

from quicraft.telemetry import global_tracing, traceparent
from quicraft.transport import (
    ALPN_CLIENT,
    Identity,
    RefusedError,
    TransportError,
)
from quicraft.transport.address import Address
from quicraft.wire import Event, ProtocolError, Response, decode_response, encode_request

from .arguments import connection_arguments
from .channel import Codec, Endpoints, EndpointsClient, Refusals, Retry, UnsendableRequest
from .kv import KV

log = logging.getLogger("quicraft.client")

#: Errors worth retrying elsewhere or later; anything else goes straight to the caller.
RETRYABLE = frozenset({"not_leader", "no_leader", "unavailable", "timeout"})
#: A node that has not answered a request within this long is left for the next one: a killed
#: node sends no goodbye, and QUIC would notice only at its idle timeout. Sessions make the
#: retry of a write safe; it is well above a write's latency under load (tens of ms).
ATTEMPT_S = 3.0
#: Why a call that gave up after a node answered no_leader may have done so.
NO_LEADER_HINT = "if it lasts, a majority of the voters may be down (quicraft mgmt health)"
WRITES = frozenset({"set", "delete", "incr", "cas"})
#: A write is sent only while its seq is less than this above the client's oldest write still
#: waiting: the results a node keeps per session (statemachine DEFAULT_MAX_RESULTS, which this
#: layer may not import; a test holds them equal). So no newer write can push the result of
#: a write still awaited out of the node's table (client.write).
SEQ_WINDOW = 1024
CODEC: Codec[Response] = Codec(
    ALPN_CLIENT,
    lambda op, args, id, tp: encode_request(op, args, id=id, traceparent=tp),
    decode_response,
)


class Attempts:
    """How many attempts of one request may have been proposed: all that were sent, but
    those a node answered with not_leader or no_leader (nodes never forward writes)."""

    __slots__ = ("maybe_proposed",)

    def __init__(self) -> None:
        self.maybe_proposed = 0


class ClientError(Exception):
    """A request failed; `code` is the protocol's error code (see docs/client.md)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Made again from its own arguments (Exception's default passes only the text):
        # raised in a process pool's worker, it reaches the caller, not a broken pool.
        return type(self), (self.code, self.message), self.__dict__


class InvalidRequest(ClientError):
    """The request was not sent: its arguments are ones every node refuses (a key too long
    or empty, an increment beyond 64 bits...). Its code is bad_request."""


def _closed(message: str) -> ClientError:
    return ClientError("closed", message)


class Client(EndpointsClient[Response]):
    """A client of a cluster's key-value service; `quicraft.connect` makes one. `kv` holds
    the operations (KV), `events()` subscribes to the cluster's events. It connects on first
    use, follows the leader and retries over its endpoints until `timeout`. Use it with
    `async with` (or close() it), in one event loop. Failures raise ClientError (see KV)."""

    def __init__(self, endpoints: list[Address], identity: Identity, timeout: float = 10.0):
        self._link = Endpoints(endpoints, identity, CODEC, closed_error=_closed)
        self.identity = identity
        self.timeout = timeout
        self.kv = KV(self)
        self._session: int | None = None
        self._seq = 0
        #: Sequence numbers of writes not yet answered, oldest first (a dict keeps the order
        #: they were added in, which is theirs: the oldest is the first key, found in O(1)).
        self._in_flight: dict[int, None] = {}
        self._registering = asyncio.Lock()
        #: Writes waiting for the window (_within_window), by seq, lowest first: a write
        #: that ends wakes only those the window now takes.
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()
        self.tracing = global_tracing("quicraft.client")
        self._close_when_dropped()

    @property
    def endpoints(self) -> list[Address]:
        """The (host, port) addresses this client tries: those it was given, then any leader
        a node named since. A copy: changing it changes nothing."""
        return list(self._link.endpoints)

    def events(
        self,
        kinds: Iterable[str] | None = None,
        prefix: str | None = None,
        since: int | None = None,
    ) -> AsyncGenerator[Event, None]:
        """The cluster's events after position `since` (None: from now), as they happen.

        `kinds` limits them (wire EVENT_KINDS); `prefix` limits kv events to those keys. It
        resumes across lost connections and nodes by itself (client/events.py) and ends
        when the caller stops (use contextlib.aclosing to stop at once), when the client is
        closed, or with a ClientError: bad_request, forbidden, or compacted (EventsCompacted,
        with `oldest`). Arguments every node would refuse raise InvalidRequest here, at once;
        started on a closed client, it raises ClientError("closed").
        """
        from .events import check_subscription, subscribe  # events.py imports from here

        kinds = check_subscription(kinds, prefix, since).kinds  # an iterator is read once
        return subscribe(self.endpoints, self.identity, kinds, prefix, since, life=self._link.life)

    async def write(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """A write, applied exactly once however often it must be retried; the node's
        result. Registering the session first (once per client) counts against the same
        timeout. Raises as `call`, and ClientError session_expired when the session ended
        while an attempt of unknown outcome was out: this write may or may not have been
        applied (the next write starts a new session)."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        attempts = Attempts()
        try:
            return await self._write(op, args, deadline, attempts)
        except ClientError as err:
            if err.code != "session_expired" or attempts.maybe_proposed != 1:
                raise
        # The log refused the one attempt that can have reached it (a session expires after
        # idling, or is dropped when too many are open): the write was not applied, so it
        # is sent again, once, under a new session. One refused after an attempt of unknown
        # outcome is not: that attempt may have been applied before the session went.
        return await self._write(op, args, deadline, Attempts())

    async def _write(
        self, op: str, args: dict[str, Any], deadline: float, attempts: Attempts
    ) -> dict[str, Any]:
        """Send the write under the client's session (registering one if it has none)."""
        async with self._registering:
            if self._session is None:
                result = await self.call("register", {}, deadline)
                self._session = int(result["session"])
        session = self._session
        self._seq += 1
        seq = self._seq
        self._in_flight[seq] = None
        try:
            oldest = next(iter(self._in_flight))
            if seq - oldest >= SEQ_WINDOW:  # rare: that many writes of this client unanswered
                await self._within_window(seq, deadline)
                oldest = next(iter(self._in_flight))
            # `ack`: the node may forget our results below the oldest write still waiting.
            request = {**args, "session": session, "seq": seq, "ack": oldest}
            return await self.call(op, request, deadline, attempts)
        except ClientError as err:
            if err.code == "session_expired" and self._session == session:
                self._session = None  # the next write registers a new session
            raise
        finally:
            del self._in_flight[seq]
            if self._waiting:
                self._open_window()

    async def _within_window(self, seq: int, deadline: float) -> None:
        """Wait until `seq` is less than SEQ_WINDOW above the oldest write still waiting.

        A node keeps at most SEQ_WINDOW results per session and drops the lowest beyond
        that, refusing a later retry of its seq: without this wait, a write whose answer was
        lost could have its result dropped by newer writes before its retry reached the
        node, and the caller would get bad_request for a write that was applied."""
        admitted = asyncio.get_running_loop().create_future()
        self._waiting.append((seq, admitted))  # seqs rise: the deque stays in order
        try:
            async with asyncio.timeout_at(deadline):
                await admitted
        except TimeoutError:
            raise ClientError(
                "timeout",
                f"gave up after {self.timeout:g}s: {SEQ_WINDOW} older writes of this client "
                "were still unanswered (this one was not sent)",
            ) from None

    def _open_window(self) -> None:
        """Wake the waiting writes the window takes now that the oldest may have moved:
        the oldest write in flight never waits, so one is always in flight while any waits,
        and the oldest only rises, so a write woken stays inside the window."""
        limit = next(iter(self._in_flight), self._seq + 1) + SEQ_WINDOW
        while self._waiting and self._waiting[0][0] < limit:
            _, admitted = self._waiting.popleft()
            if not admitted.done():  # not given up (timed out, cancelled)
                admitted.set_result(None)

    async def call(
        self,
        op: str,
        args: dict[str, Any],
        deadline: float | None = None,
        attempts: Attempts | None = None,
    ) -> dict[str, Any]:
        """Send one request, following the leader and retrying until `timeout` has passed
        (or the loop time `deadline`); the node's result. `attempts` counts those that may
        have been proposed. Traced, it is one client span (of the caller's trace), whatever
        the retries. Raises ClientError: timeout (gave up), forbidden, bad_request, internal,
        closed, or another code a node answered with; InvalidRequest for a request that
        cannot be sent."""
        if not self.tracing.on:
            return await self._call(op, args, None, deadline, attempts)
        with self.tracing.rpc("quicraft.kv", op, SpanKind.CLIENT, get_current()) as span:
            return await self._call(op, args, traceparent(span), deadline, attempts)

    async def _call(
        self,
        op: str,
        args: dict[str, Any],
        tp: str | None,
        deadline: float | None,
        attempts: Attempts | None,
    ) -> dict[str, Any]:
        attempts = Attempts() if attempts is None else attempts
        loop = asyncio.get_running_loop()
        retry = Retry(loop.time() + self.timeout if deadline is None else deadline)
        last = "no endpoint answered"
        answered = False  # for the hint if it gives up
        #: The last answer was no_leader: if it gives up, that says more than a node that
        #: could not be reached since.
        leaderless: str | None = None
        refusals = Refusals()
        while retry.left() > 0:
            channel = self._link.open_channel()
            attempt_ends = loop.time() + min(ATTEMPT_S, max(0.1, retry.left()))
            try:
                if channel is None:
                    async with asyncio.timeout_at(attempt_ends):
                        channel = await self._link.connected()
                attempts.maybe_proposed += 1
                response = await channel.request(op, args, tp, attempt_ends - loop.time())
            except UnsendableRequest as err:
                raise InvalidRequest("bad_request", str(err)) from None
            except (TransportError, ProtocolError, TimeoutError, ConnectionError) as err:
                if isinstance(err, RefusedError) and refusals.note(self._link, err):
                    raise ClientError("forbidden", f"refused by the cluster: {err}") from None
                last = self._link.failure(err)
                self._link.move_on(channel)
            else:
                if response.ok:
                    return dict(response.result or {})
                error = response.error
                answered = True
                leaderless = None
                if error is not None and error.code == "no_leader":
                    leaderless = f"no leader is known to {self._link.current_endpoint}"
                if error is None or error.code not in RETRYABLE:
                    code = error.code if error else "internal"
                    raise ClientError(code, error.message if error else "no error information")
                last = error.message
                if error.code in ("not_leader", "no_leader"):
                    attempts.maybe_proposed -= 1  # a node that is not the leader proposes nothing
                hint = error.leader_addr if error.code == "not_leader" else None
                if hint and self._link.go_to(hint):
                    await retry.before_hint()
                    continue
                if error.code in ("not_leader", "no_leader"):
                    self._link.move_on(channel)  # this node may be cut off from a majority
            await retry.pause()
        if leaderless:
            last = f"{leaderless}; {NO_LEADER_HINT}"
        elif not answered and (refused := refusals.why_given_up()):
            last = refused
        elif not answered:
            last += "; is the cluster running there?"
        raise ClientError("timeout", f"gave up after {self.timeout:g}s: {last}")


def connect(
    endpoints: Sequence[str] | str,
    cluster: str,
    certs: str | Path = "certs",
    name: str = "admin",
    timeout: float = 10.0,
) -> Client:
    """A client of `cluster` at `endpoints` ("HOST:PORT" strings, or one str of them with
    commas), using the identity `name` from `certs/<cluster>/`. Use it with `async with`; it
    connects on first use, and each call gives up after `timeout` seconds.

    Raises at once for bad arguments or key files: ValueError or IdentityError
    (client/arguments.py, connection_arguments)."""
    return Client(*connection_arguments(endpoints, cluster, certs, name, timeout))
