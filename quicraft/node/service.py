"""The `quicraft-client/1` service: many requests per stream, each answered as it finishes.

Writes go through the log on the leader; a follower answers `not_leader` with the leader's id
and address, and the client follows. Reads are linearizable by default (ReadIndex, served on
any node once it has applied the confirmed index) or stale on request (local state at once).
The reader role may only read.

Rules of this file:
- A request is not a task of its own: it starts the node's work (a proposal, a ReadIndex
  round) and a callback answers it when that work ends. Tasks and timers per request were
  most of what a request cost.
- At most MAX_IN_FLIGHT requests of one stream are served at once (answers.py says how the
  reader is held back).
- When the client ends its side, everything in flight is answered before ours ends.
- A request whose id cannot be read cannot be answered: that is a protocol error and the
  stream is reset (dispatch.py). One whose id can be read but whose op or args are wrong is
  answered with bad_request and the stream goes on.
- Traced (tracing on): each request is a server span, child of the client's "tp", ended when
  its answer is written; a write's raft.propose, its runtime spans (raft_trace.py) and
  raft.respond hang under it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode

from quicraft.core import NodeId, NotLeader, ProposalDropped
from quicraft.statemachine import Command, KVStore, checked_command
from quicraft.telemetry import NO_TRACING
from quicraft.transport import Connection, Role, Stream, TransportError
from quicraft.wire import BadRequest, Request, decode_request, encode_response, keys_refusal

from .answers import Answers
from .runtime import NodeError, NodeStopped, RaftNode, RequestTimeout

log = logging.getLogger("quicraft.service")

WRITES = frozenset({"register", "set", "delete", "incr", "cas"})
READS = frozenset({"get", "keys"})
MAX_IN_FLIGHT = 1024


class RequestFailed(Exception):
    def __init__(self, code: str, message: str, leader: NodeId | None = None):
        super().__init__(message)
        self.code = code
        self.leader = leader


class _Replies(Answers):
    """The client protocol's answers: results and errors as response frames."""

    def __init__(self, stream: Stream, address_of: Callable[[NodeId], str | None]):
        super().__init__(stream, MAX_IN_FLIGHT)
        self._address_of = address_of

    def ok(self, request_id: int, result: dict[str, object]) -> None:
        self.send(encode_response(ok=True, result=result, id=request_id))

    def fail(self, request_id: int, err: RequestFailed) -> None:
        error = {
            "code": err.code,
            "message": str(err),
            "leader": err.leader,
            "leader_addr": self._address_of(err.leader) if err.leader else None,
        }
        self.send(encode_response(ok=False, error=error, id=request_id))


class ClientService:
    def __init__(
        self,
        node: RaftNode,
        kv: KVStore,
        address_of: Callable[[NodeId], str | None],
        request_timeout: float,
    ):
        self.node = node
        self.kv = kv
        self._address_of = address_of
        self.request_timeout = request_timeout
        self.tracing = NO_TRACING

    async def handle_stream(self, conn: Connection, stream: Stream) -> None:
        replies = _Replies(stream, self._address_of)
        try:
            while True:
                await replies.room()
                frame = await stream.read_frame()
                if frame is None:
                    break
                replies.begin()
                try:
                    request = decode_request(frame)
                except BadRequest as err:
                    replies.fail(err.request_id, RequestFailed("bad_request", str(err)))
                    continue
                self.start(conn.peer.role, request, replies)
            await replies.all_answered()
            stream.end()
            await stream.drain()
        except (TransportError, ConnectionError) as err:
            log.debug("client stream from %s ended: %s", conn.peer.name, err)

    def start(self, role: Role, request: Request, replies: _Replies) -> None:
        """Serve one request for a caller of `role`; `replies` gets exactly one answer."""
        span = self.tracing.server_span("quicraft.kv", request.op, request.traceparent)
        try:
            if request.op in WRITES:
                if role is Role.READER:
                    raise RequestFailed("forbidden", "the reader role may only read")
                self._start_write(request, replies, span)
            else:
                self._start_read(request, replies, span)
        except RequestFailed as err:
            self._answer(replies, request.id, err, span)
        except NodeError as err:  # not open yet (a founder still dialling its peers)
            self._answer(replies, request.id, RequestFailed("unavailable", f"{err}; retry"), span)

    def _answer(
        self,
        replies: _Replies,
        request_id: int,
        answer: dict[str, object] | RequestFailed,
        span: Span | None,
    ) -> None:
        """Send the one answer of a request, and end its span."""
        respond = self.tracing.span("raft.respond", span) if span is not None else None
        if isinstance(answer, RequestFailed):
            replies.fail(request_id, answer)
        else:
            replies.ok(request_id, answer)
        if span is not None and respond is not None:
            respond.end()
            if isinstance(answer, RequestFailed):
                span.set_status(Status(StatusCode.ERROR, f"{answer.code}: {answer}"))
            span.end()

    # -- writes -------------------------------------------------------------------------------

    def _start_write(self, request: Request, replies: _Replies, span: Span | None) -> None:
        propose = self.tracing.span("raft.propose", span) if span is not None else None
        try:
            data, command, proposal = self._propose(request, span)
        except RequestFailed as err:
            if propose is not None:  # not taken here: a follower's not_leader, for one
                propose.set_status(Status(StatusCode.ERROR, f"{err.code}: {err}"))
            raise
        finally:
            if propose is not None:
                propose.end()
        self.kv.proposed(data, command)  # the leader applies it without decoding it again
        proposal.add_done_callback(partial(self._write_done, request.id, replies, span))

    def _propose(
        self, request: Request, span: Span | None
    ) -> tuple[bytes, Command, asyncio.Future[Any]]:
        """Append the write to this leader's log: its command, encoded, and its proposal."""
        try:
            # decode_request checked the args by the command's rules: not checked again. Nor
            # is the ts, so it is made valid here: a clock before 1970 would give a command
            # the followers refuse while this leader, which skips decoding it, applies it.
            ts_ms = max(0, int(time.time() * 1000))
            command = checked_command(request.op, request.args, ts_ms=ts_ms)
            data = command.encode()
            return data, command, self.node.start_proposal(data, self.request_timeout, span)
        except NotLeader as err:
            raise self._not_leader(err.leader) from None
        except ProposalDropped as err:
            raise RequestFailed("unavailable", f"{err}; retry") from None
        except NodeStopped as err:
            raise RequestFailed("unavailable", str(err)) from None

    def _write_done(
        self,
        request_id: int,
        replies: _Replies,
        span: Span | None,
        proposal: asyncio.Future[Any],
    ) -> None:
        try:
            answer: dict[str, object] | RequestFailed = _write_result(proposal)
        except RequestFailed as err:
            answer = err
        self._answer(replies, request_id, answer, span)

    # -- reads --------------------------------------------------------------------------------

    def _start_read(self, request: Request, replies: _Replies, span: Span | None) -> None:
        if request.args.get("stale", False):
            self._answer(replies, request.id, self._read_now(request), span)
            return
        core = self.node.core
        if core is None or core.leader is None:
            raise RequestFailed("no_leader", "no leader is known; retry shortly")
        try:
            barrier = self.node.start_read(self.request_timeout)
        except NodeStopped as err:
            raise RequestFailed("unavailable", str(err)) from None
        barrier.add_done_callback(partial(self._read_done, request, replies, span))

    def _read_done(
        self,
        request: Request,
        replies: _Replies,
        span: Span | None,
        barrier: asyncio.Future[Any],
    ) -> None:
        try:
            _outcome(barrier)
            answer: dict[str, object] | RequestFailed = self._read_now(request)
        except RequestFailed as err:
            answer = err
        self._answer(replies, request.id, answer, span)

    def _read_now(self, request: Request) -> dict[str, object]:
        if request.op == "get":
            value, revision = self.kv.get(str(request.args["key"]))
            return {"value": value, "revision": revision}
        prefix = str(request.args.get("prefix", ""))
        keys = self.kv.keys(prefix)
        refusal = keys_refusal(keys, prefix)
        if refusal is not None:  # an answer that big could not be sent: say so instead
            raise RequestFailed("bad_request", f"{refusal}; ask by longer prefixes")
        return {"keys": keys}

    def _not_leader(self, leader: NodeId | None) -> RequestFailed:
        if leader is None:
            return RequestFailed("no_leader", "no leader is known; retry shortly")
        return RequestFailed("not_leader", f"not the leader; the leader is {leader}", leader)


def _outcome(future: asyncio.Future[Any]) -> Any:
    """The future's result, or the RequestFailed that tells the client how it ended."""
    if future.cancelled():
        raise RequestFailed("unavailable", "the node stopped serving the request; retry")
    err = future.exception()
    if err is None:
        return future.result()
    if isinstance(err, RequestTimeout):
        raise RequestFailed("timeout", str(err))
    if isinstance(err, NodeStopped):
        raise RequestFailed("unavailable", str(err))
    if isinstance(err, NodeError):  # lost to another leader: a retry with the same seq is safe
        raise RequestFailed("unavailable", f"{err}; retry")
    log.error("a request failed unexpectedly", exc_info=err)
    raise RequestFailed("internal", f"the node failed: {err}")


def _write_result(proposal: asyncio.Future[Any]) -> dict[str, object]:
    result = _outcome(proposal)
    if not isinstance(result, dict):
        raise RequestFailed("internal", f"unexpected result {result!r}")
    if "error" in result:
        raise RequestFailed(str(result["error"]), str(result.get("message", "")))
    return result
