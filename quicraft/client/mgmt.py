"""The Python client of `quicraft-mgmt/1` (admin role): the same operations as `quicraft mgmt`.

    async with quicraft.connect_mgmt(endpoints="127.0.0.1:7401", cluster="c1") as m:
        status = await m.status()                  # the leader's view when it can be reached
        await m.add_member("10.0.0.4:7400")        # learner, caught up, then promoted
        await m.backup("c1.qrbackup", progress=lambda done, size: ...)

Rules of this file:
- Only the leader changes the membership or hands over leadership. A follower answers
  `not_leader` with the leader's address; with `follow_leader` (the default) the client goes
  there and asks again, otherwise it raises MgmtError with the node's hint.
- A request is retried only where that cannot do it twice: after a connection could not be
  opened (nothing was sent), after not_leader / no_leader (nothing was done), and for the
  reads (status, health, snapshot). A membership change whose connection fails once sent
  raises `unavailable`: its outcome is unknown, and status tells.
- A call gives up after the client's timeout. An op of OP_TIME_S may take longer only while
  a node serves it: its answer is waited for at least that floor, and the time nodes take
  to answer is not counted against the timeout, which bounds the rest (connecting,
  following the leader, backing off): with no leader, or no node reachable, it fails after
  the timeout, not the floor.
- A backup runs on a stream of its own and is written to a file of its own beside FILE
  (FILE.XXXXXXXX.part, made with O_EXCL: no other backup's, nor a link's target), renamed to
  FILE only once its SHA-256 has been checked: a FILE that exists is a whole backup. One
  left by a backup that was killed blocks no later backup (a shared FILE.part did, and any
  way to tell a dead backup's from a live one's raced with the live one's rename).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.context import get_current
from opentelemetry.trace import SpanKind

from quicraft.telemetry import global_tracing, traceparent
from quicraft.transport import ALPN_MGMT, Identity, RefusedError, Stream, TransportError
from quicraft.transport.address import Address
from quicraft.wire import (
    BackupInfo,
    BackupReceiver,
    BackupWriter,
    MgmtErrorInfo,
    MgmtResponse,
    ProtocolError,
    backup_info,
    decode_mgmt_response,
    encode_mgmt_request,
)

from .arguments import connection_arguments
from .channel import (
    Channel,
    Codec,
    Endpoints,
    EndpointsClient,
    Refusals,
    Retry,
    UnsendableRequest,
)
from .client import NO_LEADER_HINT, ClientError

CODEC: Codec[MgmtResponse] = Codec(
    ALPN_MGMT,
    lambda op, args, id, tp: encode_mgmt_request(op, args, id=id, traceparent=tp),
    decode_mgmt_response,
)
#: Changes the membership: never sent twice (see the rules above).
CHANGES = frozenset({"add_member", "remove_member", "promote"})
#: The least time a node is given to answer an op once sent, whatever the client's timeout
#: (which still bounds finding a node and the leader): add_member may wait for a learner to
#: catch up (node/mgmt.py CATCH_UP_TIMEOUT_S), a transfer for an election, a backup for its
#: whole stream.
OP_TIME_S = {"add_member": 75.0, "transfer": 15.0, "backup": 60.0}

#: (bytes received, bytes in all) after each chunk of a backup.
Progress = Callable[[int, int], None]
#: Why a backup does not replace what its path names (replace=True replaces only a file).
NOT_A_FILE = "it is not a regular file, and a backup replaces only a file"


class MgmtError(ClientError):
    """A management request failed: `code` is one of wire MGMT_ERROR_CODES, `hint` one line
    for a person ("leader is n2 at 10.0.0.2:7400"), `leader` / `leader_addr` when known. A
    ClientError, so that one `except` catches what any of the clients raises."""

    def __init__(
        self,
        code: str,
        message: str,
        hint: str | None = None,
        leader: str | None = None,
        leader_addr: str | None = None,
    ):
        super().__init__(code, message)
        self.hint = hint
        self.leader = leader
        self.leader_addr = leader_addr

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # As ClientError's: a pickled copy (a process pool's) is made from its own arguments.
        arguments = (self.code, self.message, self.hint, self.leader, self.leader_addr)
        return type(self), arguments, self.__dict__

    @classmethod
    def from_info(cls, info: MgmtErrorInfo) -> MgmtError:
        """The error a node's answer `info` describes."""
        return cls(info.code, info.message, info.hint, info.leader, info.leader_addr)


class MgmtClient(EndpointsClient[MgmtResponse]):
    """A management client of a cluster (identity of role admin); `quicraft.connect_mgmt`
    makes one. Status and health, membership changes, leadership transfer, snapshots and
    backups: what `quicraft mgmt` does. Use it with `async with` (or close() it), in one
    event loop.

    Every call raises MgmtError (a ClientError) when it fails, with a `hint` for a person:
    timeout (no node, or no leader, answered in time), forbidden (not an admin identity),
    unavailable (a membership change whose answer was lost: its outcome is unknown), closed,
    internal, not_leader (from a follower, when `follow_leader` is off), and the codes its
    method names."""

    def __init__(
        self,
        endpoints: list[Address],
        identity: Identity,
        cluster: str,
        timeout: float = 10.0,
        follow_leader: bool = True,
    ):
        self._link = Endpoints(
            endpoints, identity, CODEC, closed_error=lambda why: MgmtError("closed", why)
        )
        self.cluster = cluster
        self.timeout = timeout
        self.follow_leader = follow_leader
        self.tracing = global_tracing("quicraft.client")
        self._close_when_dropped()

    # -- the operations --------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Every member with its role, match and lag, the term, commit and leader. With
        `follow_leader`, asked of the leader (which alone knows the others' progress) when
        the first node answering knows where it is; otherwise that node's own view. Raises
        as every call does (see MgmtClient)."""
        return await self._status(self._deadline())

    async def _status(self, deadline: float) -> dict[str, Any]:
        first = await self.call("status", deadline=deadline)
        leader = first["leader"]
        if not self.follow_leader or leader is None or leader == first["node"]:
            return first
        where = next((m["address"] for m in first["members"] if m["id"] == leader), None)
        if where is None:
            return first
        if not self._link.go_to(where):
            return first
        try:
            return await self.call("status", timeout=3.0, deadline=deadline)
        except MgmtError:
            return first  # the leader cannot be reached from here: say what we know

    async def health(self) -> dict[str, Any]:
        """{"ok", "leader", "voters", "reachable", "problems"}, as the leader sees them; with
        no leader, ok is False and `problems` say why (a node's own view). Raises as every
        call does (see MgmtClient)."""
        return await self.call("health")

    async def member_id(self, node: str) -> str:
        """The id of member `node`, given its id or its name (names are for people; ids are
        what Raft uses). Anything else comes back as it is: the node then answers
        unknown_member. Raises as `status`, and MgmtError bad_request for a name that
        several members have."""
        return await self._member_id(node, self._deadline())

    async def _member_id(self, node: str, deadline: float) -> str:
        members = (await self._status(deadline))["members"]
        if any(m["id"] == node for m in members):
            return node
        named = sorted(str(m["id"]) for m in members if m["name"] == node)
        if len(named) > 1:  # a node given a new key under an old name, say
            raise MgmtError(
                "bad_request",
                f"{len(named)} members are named {node}: {', '.join(named)}",
                hint="give the id of the one you mean (quicraft mgmt status)",
            )
        return named[0] if named else node

    async def transfer(self, target: str = "auto") -> str:
        """Hand leadership to voter `target` (id or name; "auto": the most caught-up one);
        the new leader's id. MgmtError unknown_member, bad_request (a learner, or no other
        voter), unreachable (the voter has not answered the leader lately), or timeout (it
        did not take over in time)."""
        deadline = self._deadline()  # finding the id and the leader: one timeout for both
        if target != "auto":
            target = await self._member_id(target, deadline)
        return str((await self.call("transfer", {"target": target}, deadline=deadline))["leader"])

    async def add_member(self, address: str, learner: bool = False) -> dict[str, Any]:
        """Add the node at `address` ("HOST:PORT", started with --no-bootstrap): as a learner,
        then, once caught up, promoted to voter unless `learner`. {"node": id, "index"}.
        MgmtError unreachable (no node of this cluster there), already_member, bad_request (a
        wildcard address, or a node that holds a cluster's data), busy (another change is
        under way), no_quorum, or timeout (added, but it did not catch up: it stays a
        learner)."""
        return await self.call("add_member", {"address": address, "learner": learner})

    async def remove_member(self, node: str) -> int:
        """Remove member `node` (id or name); the log index of the change. MgmtError
        unknown_member, busy, or no_quorum (too few voters would be left answering)."""
        deadline = self._deadline()
        node = await self._member_id(node, deadline)
        return int((await self.call("remove_member", {"node": node}, deadline=deadline))["index"])

    async def promote(self, node: str) -> int:
        """Make learner `node` (id or name) a voter; the log index of the change. MgmtError
        unknown_member, already_member (a voter already), unreachable (it does not answer
        the leader), timeout (it did not catch up in time), busy, or no_quorum."""
        deadline = self._deadline()
        node = await self._member_id(node, deadline)
        return int((await self.call("promote", {"node": node}, deadline=deadline))["index"])

    async def snapshot(self) -> int:
        """Snapshot the contacted node's state machine now; the snapshot's index. MgmtError
        unavailable if the node cannot take one now."""
        return int((await self.call("snapshot"))["index"])

    async def backup(
        self, path: str | Path, progress: Progress | None = None, *, replace: bool = False
    ) -> BackupInfo:
        """Stream a consistent snapshot of the contacted node (everything committed before
        the call, when the cluster has a leader) into the backup file `path`, readable by
        its owner only. It is written as `path`.XXXXXXXX.part first; `path` appears only when
        complete, and an existing `path` is replaced only with `replace`, and only if it is a
        regular file (else FileExistsError).
        Returns what the backup holds (BackupInfo). MgmtError timeout (no node answered) or
        unavailable (the stream failed or ended early; nothing is left at `path`)."""
        path = Path(path)
        self._check_free(path, replace)
        part: Path | None = None
        loop = asyncio.get_running_loop()
        watch: asyncio.Task[None] | None = None
        stream: Stream | None = None  # given up unless read to its trailer
        try:
            channel = await self._reach()
            async with asyncio.timeout(max(self.timeout, OP_TIME_S["backup"])):
                # The backup's stream is its own, not under the channel's watch of requests:
                # a node that dies mid-backup would hold it for its whole budget.
                watch = asyncio.create_task(channel.close_if_silent(lambda: True))
                stream = await channel.conn.open_stream()
                stream.write_frame(encode_mgmt_request("backup", {}, id=1))
                stream.end()
                frame = await stream.read_frame()
                if frame is None:
                    raise MgmtError("unavailable", "the node ended the backup stream at once")
                header = decode_mgmt_response(frame, "backup")
                if header.error is not None:
                    raise MgmtError.from_info(header.error)
                assert header.result is not None
                receiver = BackupReceiver(header.result)
                created = int(time.time() * 1000)
                info = backup_info(header.result, cluster=self.cluster, created_ms=created)
                fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".part")
                part = Path(name)  # mode 0600: it holds every value of the store
                with os.fdopen(fd, "wb") as fp:
                    writer = BackupWriter(fp, info)
                    if progress is not None:
                        progress(0, info.size)
                    while not receiver.ended:
                        frame = await stream.read_frame()
                        if frame is None:
                            raise MgmtError(
                                "unavailable",
                                f"the backup stream ended after {receiver.received} of "
                                f"{info.size} bytes",
                            )
                        data = receiver.feed(frame)
                        if isinstance(data, MgmtErrorInfo):
                            raise MgmtError.from_info(data)
                        if data:
                            writer.write(data)
                            if progress is not None:
                                progress(receiver.received, info.size)
                    stream = None  # read whole: the node ends it
                    writer.finish()
                    fp.flush()
                    await loop.run_in_executor(None, os.fsync, fp.fileno())
            self._check_free(path, replace)  # again: it may have appeared meanwhile
            part.replace(path)
            part = None
            await loop.run_in_executor(None, _sync_directory, path.parent)  # the rename too
            return info
        except RefusedError as err:
            raise _forbidden(err) from None
        except (TransportError, ProtocolError, ConnectionError, TimeoutError) as err:
            raise MgmtError(
                "unavailable",
                f"backup from {self.current_endpoint} failed: {str(err) or 'timed out'}",
            ) from None
        finally:
            if stream is not None:
                # The channel lives on: a stream left unread would hold its share of the
                # connection's flow-control window, and the node's sending task, for good.
                stream.abort()
            if watch is not None:
                watch.cancel()
            if part is not None:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()

    async def _reach(self) -> Channel[MgmtResponse]:
        """A channel to the first endpoint that answers, tried in turn for `timeout` (any
        node can take a backup, and nothing is sent before one answers, so trying the next
        is safe); MgmtError("timeout") if none does."""
        retry = Retry(asyncio.get_running_loop().time() + self.timeout)
        last = "no endpoint answered"
        refusals = Refusals()
        while retry.left() > 0:
            try:
                async with asyncio.timeout(max(0.1, retry.left())):
                    return await self._link.connected()
            except (TransportError, ConnectionError, TimeoutError) as err:
                if isinstance(err, RefusedError) and refusals.note(self._link, err):
                    raise  # every endpoint said no (channel.py)
                last = self._link.failure(err)
                self._link.move_on(None)
            await retry.pause()
        last = refusals.why_given_up() or last
        raise MgmtError(
            "timeout", f"gave up after {self.timeout:g}s: {last}", "is the cluster running?"
        )

    @staticmethod
    def _check_free(path: Path, replace: bool) -> None:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        if not replace:
            raise FileExistsError(errno.EEXIST, "it exists already", str(path))
        if not stat.S_ISREG(mode):  # a rename would replace a device, a FIFO or a link itself
            raise FileExistsError(errno.EEXIST, NOT_A_FILE, str(path))

    # -- requests ------------------------------------------------------------------------------

    def _deadline(self) -> float:
        """The loop time by which a call made now gives up (floors aside, see the rules)."""
        return asyncio.get_running_loop().time() + self.timeout

    async def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        timeout: float | None = None,
        *,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Send one request, following the leader and retrying where safe (see the rules).
        `timeout` replaces the client's, floor included; `deadline` (a loop time) ends it
        sooner, when it is one step of an operation. Traced, it is one client span (of the
        caller's trace), whatever the retries. The node's result; raises MgmtError (see
        MgmtClient)."""
        args = args or {}
        if not self.tracing.on:
            return await self._call(op, args, timeout, deadline, None)
        with self.tracing.rpc("quicraft.mgmt", op, SpanKind.CLIENT, get_current()) as span:
            return await self._call(op, args, timeout, deadline, traceparent(span))

    async def _call(
        self,
        op: str,
        args: dict[str, Any],
        timeout: float | None,
        ends: float | None,
        tp: str | None,
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        budget = timeout if timeout is not None else self.timeout
        floor = OP_TIME_S.get(op, 0.0) if timeout is None else 0.0  # see the rules
        retry = Retry(loop.time() + budget if ends is None else min(loop.time() + budget, ends))
        last = "no endpoint answered"
        #: The last answer was no_leader: if it gives up, that says more than a node that
        #: could not be reached since (as in the KV client).
        leaderless: str | None = None
        refusals = Refusals()
        answered = False
        while retry.left() > 0:
            channel: Channel[MgmtResponse] | None = None
            try:
                async with asyncio.timeout(max(0.1, retry.left())):
                    channel = await self._link.connected()
                sent = loop.time()
                wait = max(0.1, retry.left(), floor)
                try:
                    response = await channel.request(op, args, tp, timeout=wait)
                finally:
                    if floor:  # a node's time serving it, not the client's finding one
                        retry.deadline += loop.time() - sent
            except UnsendableRequest as err:
                raise MgmtError("bad_request", f"not sent: {err}") from None
            except (TransportError, ProtocolError, TimeoutError, ConnectionError) as err:
                if isinstance(err, RefusedError) and refusals.note(self._link, err):
                    raise _forbidden(err) from None
                last = self._link.failure(err)
                if op in CHANGES and channel is not None:
                    raise MgmtError(
                        "unavailable",
                        f"{op} was sent but not answered ({last}): its outcome is unknown",
                        hint="check with: quicraft mgmt status",
                    ) from None
                self._link.move_on(channel)
            else:
                if response.ok:
                    return dict(response.result or {})
                error = response.error
                assert error is not None
                last = error.message
                answered = True
                leaderless = None
                if error.code == "no_leader":
                    leaderless = f"no leader is known to {self._link.current_endpoint}"
                follow = error.code == "not_leader" and self.follow_leader
                hint = error.leader_addr if follow else None
                if hint and self._link.go_to(hint):
                    await retry.before_hint()
                    continue
                if (
                    hint
                    or error.code == "no_leader"
                    or (error.code == "unavailable" and op not in CHANGES)
                ):
                    self._link.move_on(channel)  # this node may be cut off, or stopping
                else:
                    raise MgmtError.from_info(error)
            await retry.pause()
        if leaderless:
            last, hint = leaderless, NO_LEADER_HINT
        elif not answered and refusals.last is not None:
            last = refusals.why_given_up() or last
            hint = _forbidden(refusals.last).hint
        else:
            hint = "is the cluster running?"
        raise MgmtError("timeout", f"gave up after {budget:g}s: {last}", hint=hint)


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def connect_mgmt(
    endpoints: Sequence[str] | str,
    cluster: str,
    certs: str | Path = "certs",
    name: str = "admin",
    timeout: float = 10.0,
    follow_leader: bool = True,
) -> MgmtClient:
    """A management client of `cluster` at `endpoints` ("HOST:PORT" strings, or one str of
    them with commas), using identity `name` (role admin) from `certs/<cluster>/`. Use it
    with `async with`; it connects on first use.

    Each call gives up after `timeout` seconds, except that a node serving an operation that
    needs longer (OP_TIME_S) is given that long to answer, whatever the timeout: add_member
    up to 75 s (a learner may take a minute to catch up), transfer 15 s (an election),
    backup 60 s. Finding a node and the leader is bounded by `timeout` all the same.

    Raises at once for bad arguments or key files: ValueError or IdentityError
    (client/arguments.py, connection_arguments)."""
    addresses, identity, timeout = connection_arguments(endpoints, cluster, certs, name, timeout)
    return MgmtClient(addresses, identity, cluster, timeout, follow_leader)


def _forbidden(refusal: RefusedError) -> MgmtError:
    hint = None
    if refusal.reason == "role_not_allowed":  # not for another CA, an expired key...
        hint = "management needs an identity of role admin (quicraft certs issue)"
    return MgmtError("forbidden", f"refused by the cluster: {refusal}", hint)
