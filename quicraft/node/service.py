"""The `quicraft-client/1` service: one request and one response per stream.

Writes go through the log on the leader; a follower answers `not_leader` with the leader's id
and address, and the client follows. Reads are linearizable by default (ReadIndex, served on
any node once it has applied the confirmed index) or stale on request (local state at once).
The reader role may only read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from quicraft.core import NodeId, NotLeader, ProposalDropped
from quicraft.statemachine import CommandError, KVStore, encode_command
from quicraft.transport import Connection, Role, Stream, TransportError
from quicraft.wire import ProtocolError, Request, decode_request, encode_response

from .runtime import NodeError, NodeStopped, RaftNode, RequestTimeout

log = logging.getLogger("quicraft.service")

WRITES = frozenset({"register", "set", "delete", "incr", "cas"})
READS = frozenset({"get", "keys"})


class RequestFailed(Exception):
    def __init__(self, code: str, message: str, leader: NodeId | None = None):
        super().__init__(message)
        self.code = code
        self.leader = leader


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

    async def handle_stream(self, conn: Connection, stream: Stream) -> None:
        try:
            frame = await stream.read_frame()
            if frame is None:
                return
            try:
                result = await self.execute(conn.peer.role, decode_request(frame))
                stream.write_frame(encode_response(ok=True, result=result))
            except ProtocolError as err:
                stream.write_frame(self._error(RequestFailed("bad_request", str(err))))
            except RequestFailed as err:
                stream.write_frame(self._error(err))
            stream.end()
            await stream.drain()
        except (TransportError, ProtocolError, ConnectionError) as err:
            log.debug("client stream from %s ended: %s", conn.peer.name, err)

    def _error(self, err: RequestFailed) -> bytes:
        leader_addr = self._address_of(err.leader) if err.leader else None
        return encode_response(
            ok=False,
            error={
                "code": err.code,
                "message": str(err),
                "leader": err.leader,
                "leader_addr": leader_addr,
            },
        )

    async def execute(self, role: Role, request: Request) -> dict[str, object]:
        """Run one request for a caller of `role`; raises RequestFailed."""
        if request.op in WRITES:
            if role is Role.READER:
                raise RequestFailed("forbidden", "the reader role may only read")
            return await self._write(request)
        return await self._read(request)

    async def _write(self, request: Request) -> dict[str, object]:
        try:
            command = encode_command(request.op, request.args, ts_ms=int(time.time() * 1000))
        except CommandError as err:
            raise RequestFailed("bad_request", str(err)) from None
        try:
            result = await self.node.propose(command, self.request_timeout)
        except NotLeader as err:
            raise self._not_leader(err.leader) from None
        except ProposalDropped as err:
            raise RequestFailed("unavailable", f"{err}; retry") from None
        except RequestTimeout as err:
            raise RequestFailed("timeout", str(err)) from None
        except NodeStopped as err:
            raise RequestFailed("unavailable", str(err)) from None
        except NodeError as err:  # lost to another leader: a retry with the same seq is safe
            raise RequestFailed("unavailable", f"{err}; retry") from None
        if not isinstance(result, dict):
            raise RequestFailed("internal", f"unexpected result {result!r}")
        if "error" in result:
            raise RequestFailed(str(result["error"]), str(result.get("message", "")))
        return result

    async def _read(self, request: Request) -> dict[str, object]:
        if not request.args.get("stale", False):
            core = self.node.core
            if core is None or core.leader is None:
                raise RequestFailed("no_leader", "no leader is known; retry shortly")
            try:
                await self.node.read_barrier(self.request_timeout)
            except RequestTimeout as err:
                raise RequestFailed("timeout", str(err)) from None
            except NodeStopped as err:
                raise RequestFailed("unavailable", str(err)) from None
        if request.op == "get":
            value, revision = self.kv.get(str(request.args["key"]))
            return {"value": value, "revision": revision}
        return {"keys": self.kv.keys(str(request.args.get("prefix", "")))}

    def _not_leader(self, leader: NodeId | None) -> RequestFailed:
        if leader is None:
            return RequestFailed("no_leader", "no leader is known; retry shortly")
        return RequestFailed("not_leader", f"not the leader; the leader is {leader}", leader)
