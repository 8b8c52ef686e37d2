"""The `quicraft-mgmt/1` service: status, health, leadership transfer, membership, snapshots
and backups, for callers of the admin role (the transport refuses every other role).

Rules of this file:
- As on quicraft-client/1 (service.py), one stream carries many requests, each with an id and
  answered when it ends; at most MAX_IN_FLIGHT run at once per stream, beyond that the
  service stops reading and QUIC's flow control holds the caller back. Unlike client requests,
  a management operation is rare and may take several steps (dial, propose, wait for a
  learner to catch up, promote), so each runs as a task of its own; a callback answers it.
- Only the leader changes the membership or hands over leadership: a follower answers
  `not_leader` with the leader and a hint "leader is <id> at <addr>", and changes nothing.
  status and snapshot are answered by any node; health by the leader (it alone knows who
  answers), or by a node that knows no leader, which says so.
- A backup takes its stream: it must be the first request there, and the answer is the frames
  of wire/backup.py (header, chunks, trailer), after which the stream ends.
- Errors are MgmtFailed(code, message, hint): the code is one of wire MGMT_ERROR_CODES, the
  hint one line telling a person what to do next.
- Traced (tracing on): each operation is a server span, child of the caller's "tp", current
  in the operation's task (so its logs carry the trace) and ended when it is answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from functools import partial
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from quicraft.core import (
    ConfChange,
    ConfChangeKind,
    NodeId,
    NotLeader,
    ProposalDropped,
    RaftCore,
    RaftError,
    Role,
)
from quicraft.telemetry import NO_TRACING, remote_parent
from quicraft.transport import Connection, Stream, TransportError
from quicraft.transport import Role as IdentityRole
from quicraft.transport.address import Address, is_unspecified, parse_address
from quicraft.wire import (
    BACKUP_CHUNK,
    BackupSender,
    BadRequest,
    Hello,
    MgmtRequest,
    ProtocolError,
    decode_mgmt_request,
    encode_mgmt_response,
)

from .answers import Answers
from .peers import PeerPool
from .runtime import NodeError, NodeStopped, ProposalLost, RaftNode, RequestTimeout, successor

log = logging.getLogger("quicraft.mgmt")

MAX_IN_FLIGHT = 16
#: A learner within this many entries of the leader's last index is caught up enough to
#: promote: it will not hold back commits for longer than one append batch takes.
CATCH_UP_SLACK = 64
#: How long add_member waits for a new learner to catch up before promoting it.
CATCH_UP_TIMEOUT_S = 60.0
#: How long add_member waits for the hello of the node it dialed (it comes a round trip
#: after the connection): whether that node holds a cluster's data already.
HELLO_WAIT_S = 2.0


def caught_up(core: RaftCore, node: NodeId) -> bool:
    """On a leader: `node` is within CATCH_UP_SLACK entries of the log's end."""
    pr = core.progress.get(node)
    return pr is not None and pr.match >= core.log.last_index() - CATCH_UP_SLACK


class MgmtFailed(Exception):
    """An operation failed: `code` (wire MGMT_ERROR_CODES), a message and a one-line hint."""

    def __init__(
        self, code: str, message: str, hint: str | None = None, leader: NodeId | None = None
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.leader = leader


class _Replies(Answers):
    """The mgmt protocol's answers: results checked against their op, errors with hints."""

    def __init__(self, stream: Stream, address_of: Callable[[NodeId], str | None]):
        super().__init__(stream, MAX_IN_FLIGHT)
        self._address_of = address_of

    def ok(self, request: MgmtRequest, result: dict[str, Any]) -> None:
        try:
            frame = encode_mgmt_response(id=request.id, ok=True, result=result, op=request.op)
        except ProtocolError as err:  # our bug: say so rather than leave the caller waiting
            log.error("bad %s result %r: %s", request.op, result, err)
            self.fail(request.id, MgmtFailed("internal", f"the node built a bad answer: {err}"))
            return
        self.send(frame)

    def fail(self, request_id: int, err: MgmtFailed) -> None:
        self.send(error_frame(request_id, err, self._address_of))


def error_frame(
    request_id: int, err: MgmtFailed, address_of: Callable[[NodeId], str | None]
) -> bytes:
    error = {
        "code": err.code,
        "message": err.message,
        "leader": err.leader,
        "leader_addr": address_of(err.leader) if err.leader else None,
        "hint": err.hint,
    }
    return encode_mgmt_response(id=request_id, ok=False, error=error)


class MgmtService:
    def __init__(
        self,
        node: RaftNode,
        pool: PeerPool,
        *,
        name: str,
        address_of: Callable[[NodeId], str | None],
        published_name: Callable[[NodeId], str | None] = lambda _: None,
        save_addresses: Callable[[], None],
        request_timeout: float,
        cluster_id: Callable[[], str | None] | None = None,
        hellos: Callable[[], Mapping[NodeId, Hello]] = dict,
    ):
        self.node = node
        self.pool = pool
        self.name = name
        self._address_of = address_of
        self._save_addresses = save_addresses
        self.request_timeout = request_timeout
        self._cluster_id = cluster_id or (lambda: None)
        #: The latest hello of each peer (server.py): a new one comes on every connection.
        self._hellos = hellos
        self._names: dict[NodeId, str] = {node.id: name}
        #: The names the leaders published (node/address_book.py): for members this node has
        #: not been connected to, such as one that failed before it started.
        self._published_name = published_name
        self._tasks: set[asyncio.Task[dict[str, Any]]] = set()
        #: More problems for health to report (lan.py: a split of the cluster name).
        self.extra_problems: Callable[[], list[str]] = list
        self.tracing = NO_TRACING
        #: Nodes an add_member is adding, by the address it dials and (once dialed) by id.
        self._adding: dict[Address, NodeId | None] = {}

    def close(self) -> None:
        """Cancel the operations still running (the node is stopping)."""
        for task in list(self._tasks):
            task.cancel()

    # -- the stream ----------------------------------------------------------------------------

    async def handle_stream(self, conn: Connection, stream: Stream) -> None:
        replies = _Replies(stream, self._address_of)
        first = True
        try:
            while True:
                await replies.room()
                frame = await stream.read_frame()
                if frame is None:
                    break
                replies.begin()
                try:
                    request = decode_mgmt_request(frame)
                except BadRequest as err:
                    replies.fail(err.request_id, MgmtFailed("bad_request", str(err)))
                    continue
                if conn.peer.role is not IdentityRole.ADMIN:  # the transport already refuses
                    replies.fail(request.id, MgmtFailed("forbidden", "management needs admin"))
                elif request.op != "backup":
                    self._start(request, replies)
                elif first:
                    replies.in_flight -= 1  # the backup answers on the stream itself
                    span = self._span(request.op, request.traceparent)
                    with trace.use_span(span, end_on_exit=True):
                        await self._backup(request, stream)
                    return
                else:
                    replies.fail(
                        request.id,
                        MgmtFailed(
                            "bad_request",
                            "a backup must be the first request of a stream of its own",
                        ),
                    )
                first = False
            await replies.all_answered()
            stream.end()
            await stream.drain()
        except (TransportError, ConnectionError) as err:
            log.debug("mgmt stream from %s ended: %s", conn.peer.name, err)

    def _start(self, request: MgmtRequest, replies: _Replies) -> None:
        span = self._span(request.op, request.traceparent)
        with trace.use_span(span):  # the task's context is a copy of this one
            task = asyncio.create_task(self._serve(request), name=f"mgmt-{request.op}")
        self._tasks.add(task)
        task.add_done_callback(partial(self._done, request, replies, span))

    def _span(self, op: str, traceparent: str | None) -> Span:
        # Always a span, recorded or not: it carries the caller's sampling decision to the
        # spans of the work the operation starts.
        parent = remote_parent(traceparent)
        return self.tracing.rpc("quicraft.mgmt", op, SpanKind.SERVER, parent)

    def _done(
        self,
        request: MgmtRequest,
        replies: _Replies,
        span: Span,
        task: asyncio.Task[dict[str, Any]],
    ) -> None:
        self._tasks.discard(task)
        failure: MgmtFailed | None = None
        if task.cancelled():
            failure = MgmtFailed("unavailable", "the node is stopping")
        elif (err := task.exception()) is None:
            replies.ok(request, task.result())
        elif isinstance(err, MgmtFailed):
            failure = err
        else:
            log.error("mgmt %s failed unexpectedly", request.op, exc_info=err)
            failure = MgmtFailed("internal", f"the node failed: {err}")
        if failure is not None:
            replies.fail(request.id, failure)
            span.set_status(StatusCode.ERROR, f"{failure.code}: {failure}")
        span.end()

    async def _serve(self, request: MgmtRequest) -> dict[str, Any]:
        args = request.args
        if request.op == "status":
            return self.status()
        if request.op == "health":
            return self.health()
        if request.op == "transfer":
            return await self.transfer(args["target"])
        if request.op == "add_member":
            return await self.add_member(args["address"], learner=args["learner"])
        if request.op == "remove_member":
            return await self.change(ConfChangeKind.REMOVE, args["node"])
        if request.op == "promote":
            return await self.change(ConfChangeKind.PROMOTE, args["node"])
        if request.op == "snapshot":
            return {"index": await self._snapshot()}
        raise MgmtFailed("bad_request", f"op {request.op} is not served here")

    # -- what the node knows -------------------------------------------------------------------

    @property
    def _core(self) -> RaftCore:
        if self.node.core is None:
            raise MgmtFailed("unavailable", "the node is starting; retry shortly")
        return self.node.core

    def _name(self, node: NodeId) -> str | None:
        conn = self.pool.connection(node)
        if conn is not None:
            self._names[node] = conn.peer.name
        return self._names.get(node) or self._published_name(node)

    def _heard(self, core: RaftCore, node: NodeId) -> bool:
        """On a leader: `node` answered within an election timeout (CheckQuorum's rule)."""
        if node == self.node.id:
            return True
        pr = core.progress.get(node)
        return pr is not None and pr.silent_ticks < core.config.election_tick

    async def _answering(self, core: RaftCore, nodes: Collection[NodeId]) -> set[NodeId]:
        """Those of `nodes` that answer this leader: they answered it, and within an
        election timeout. One it has not heard from since it took over may be down or not:
        it is waited for, until it answers or an election timeout has passed (a new leader's
        every peer looks recent, so _heard alone would count one that is down)."""
        loop = asyncio.get_running_loop()
        known_by = loop.time() + self.node.timings.election_timeout_s()
        while True:
            if core.role is not Role.LEADER:
                raise self._not_leader(core.leader)
            answering, unknown = set(), False
            for node in nodes:
                if node == self.node.id or (
                    self._heard(core, node) and core.progress[node].answered
                ):
                    answering.add(node)
                elif self._heard(core, node):
                    unknown = True  # not heard from yet, nor silent for an election timeout
            if not unknown or loop.time() >= known_by:
                return answering
            await asyncio.sleep(self.node.timings.tick_ms / 1000)

    def status(self) -> dict[str, Any]:
        core = self._core
        leading = core.role is Role.LEADER
        last = core.log.last_index()
        tick_ms = self.node.timings.tick_ms
        members = []
        for node in sorted(core.membership.members()):
            voter = node in core.membership.voters
            member: dict[str, Any] = {
                "id": node,
                "name": self._name(node),
                "address": self._address_of(node),
                "voter": voter,
                "role": "unknown",
            }
            if node == self.node.id:
                role = core.role.value.replace("-", "_")
                member["role"] = "learner" if not voter and not leading else role
                member |= {"term": core.term, "commit": core.log.committed}
                member["applied"] = core.log.applied
                if leading:
                    member |= {"match": last, "lag": 0, "last_contact_ms": 0}
            elif node == core.leader:
                member["role"] = "leader"
            elif leading and self._heard(core, node):
                member["role"] = "follower" if voter else "learner"
            pr = core.progress.get(node) if leading and node != self.node.id else None
            if pr is not None:
                member |= {"match": pr.match, "lag": max(0, last - pr.match)}
                member["last_contact_ms"] = pr.silent_ticks * tick_ms
            members.append(member)
        return {
            "cluster_id": self._cluster_id(),
            "leader": core.leader,
            "term": core.term,
            "commit": core.log.committed,
            "applied": core.log.applied,
            "node": self.node.id,
            "members": members,
        }

    def health(self) -> dict[str, Any]:
        core = self._core
        voters = core.membership.voters
        if core.role is not Role.LEADER and core.leader is not None:
            raise self._not_leader(core.leader)
        if core.role is not Role.LEADER:
            if not core.membership.members():
                problem = (
                    f"{self.node.id} is not a member of a cluster yet: add it with "
                    "'quicraft mgmt add-member'"
                )
            else:
                problem = (
                    f"no leader known to {self.node.id}: an election is under way, or a "
                    "quorum of voters is unreachable"
                )
            # No leader's progress to go by: count the voters whose connection carried a
            # frame within an election timeout (during an election, every reachable voter
            # answers our pre-votes or sends its own).
            window_s = core.config.election_tick * self.node.timings.tick_ms / 1000
            reachable = [
                v for v in voters if v == self.node.id or self.pool.heard_within(v, window_s)
            ]
            problems = [problem]
            if len(reachable) < len(voters) // 2 + 1:
                problems.insert(0, _no_quorum(len(reachable), len(voters)))
            return {"ok": False, "leader": None, "voters": len(voters),
                    "reachable": len(reachable),
                    "problems": [*problems, *self.extra_problems()][:64]}  # fmt: skip
        reachable = [v for v in voters if self._heard(core, v)]
        problems = []
        if len(reachable) < len(voters) // 2 + 1:
            problems.append(_no_quorum(len(reachable), len(voters)))
        tick_ms = self.node.timings.tick_ms
        for node in sorted(core.membership.members() - set(reachable)):
            if self._heard(core, node):
                continue
            what = "voter" if node in voters else "learner"
            pr = core.progress.get(node)
            silent = f"for {pr.silent_ticks * tick_ms} ms" if pr is not None else "yet"
            where = self._address_of(node) or "an unknown address"
            name = self._name(node)
            who = f"{node} ({name})" if name else node
            problems.append(f"{what} {who} at {where} has not answered {silent}")
        problems += self.extra_problems()
        return {
            "ok": not problems,
            "leader": self.node.id,
            "voters": len(voters),
            "reachable": len(reachable),
            "problems": problems[:64],
        }

    # -- leadership ----------------------------------------------------------------------------

    def _not_leader(self, leader: NodeId | None) -> MgmtFailed:
        if leader is None:
            return MgmtFailed(
                "no_leader",
                "no leader is known",
                hint="an election may be under way; retry shortly (quicraft mgmt health)",
            )
        address = self._address_of(leader)
        where = f"at {address}" if address else "(address unknown)"
        return MgmtFailed(
            "not_leader",
            "not leader",
            hint=f"leader is {leader} {where}",
            leader=leader,
        )

    def _leader_core(self) -> RaftCore:
        core = self._core
        if core.role is not Role.LEADER:
            raise self._not_leader(core.leader)
        return core

    async def transfer(self, target: str) -> dict[str, Any]:
        core = self._leader_core()
        voters = core.membership.voters
        if target == "auto":
            await self._answering(core, voters)  # what successor() goes by
            found = successor(core)
            if found is None and len(voters) > 1:
                raise MgmtFailed(
                    "unreachable",
                    "no other voter has answered the leader within an election timeout",
                    hint="see which with: quicraft mgmt health",
                )
            if found is None:
                raise MgmtFailed(
                    "bad_request",
                    "there is no other voter to hand leadership to",
                    hint="add a member first (quicraft mgmt add-member)",
                )
            target = found
        elif target == self.node.id:
            return {"leader": target}
        self._check_member(core, target)
        if target not in voters:
            raise MgmtFailed(
                "bad_request",
                f"{target} is a learner: only a voter can lead",
                hint=f"promote it first: quicraft mgmt promote {target}",
            )
        if target not in await self._answering(core, [target]):
            raise MgmtFailed(
                "unreachable",
                f"{target} has not answered the leader within an election timeout: it "
                "cannot take over",
                hint="start it, or hand over to another voter (quicraft mgmt transfer auto)",
            )
        try:
            self.node.start_transfer(target)
        except NotLeader as err:
            raise self._not_leader(err.leader) from None
        except (RaftError, NodeError) as err:
            raise MgmtFailed("unavailable", str(err)) from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self.node.timings.election_timeout_s() + 1.0
        while loop.time() < deadline:
            if core.role is not Role.LEADER and core.leader is not None:
                return {"leader": core.leader}
            await asyncio.sleep(self.node.timings.tick_ms / 1000)
        raise MgmtFailed(
            "timeout",
            f"{target} did not take over in time",
            hint="check that it is reachable and caught up (quicraft mgmt status), then retry",
        )

    # -- membership ----------------------------------------------------------------------------

    def _check_member(self, core: RaftCore, node: NodeId) -> None:
        if node not in core.membership:
            raise MgmtFailed(
                "unknown_member",
                f"{node} is not a member of this cluster",
                hint="see the members with: quicraft mgmt status",
            )

    def being_added(self, node: NodeId, address: Address) -> bool:
        """Whether an operator's add_member is adding this node now: LAN forming (lan.py),
        which adds the nodes that say hello, then leaves it alone. Otherwise both add it and
        the operator is told it is "already a learner" by a change nobody asked for."""
        return address in self._adding or node in self._adding.values()

    async def add_member(self, address: str, *, learner: bool) -> dict[str, Any]:
        try:
            where = parse_address(address)
        except ValueError as err:
            raise MgmtFailed("bad_request", str(err)) from None
        if is_unspecified(where[0]):  # it would be published, and dialed by every member
            raise MgmtFailed(
                "bad_request",
                f"{address} is the wildcard address a node listens on, not one to dial",
                hint="give an address of the new node's host that the members can reach",
            )
        self._adding[where] = None
        try:
            return await self._add_member(address, where, learner)
        finally:
            self._adding.pop(where, None)

    async def _add_member(self, address: str, where: Address, learner: bool) -> dict[str, Any]:
        core = self._leader_core()
        before = dict(self._hellos())  # the hello it says on the new connection is news
        try:
            node = await self.pool.dial(where)
            self._adding[where] = node
        except TransportError as err:
            raise MgmtFailed(
                "unreachable",
                f"cannot reach a node of this cluster at {address}: {err}",
                hint="start it there with 'quicraft node --no-bootstrap' and this cluster's "
                "certificates",
            ) from None
        if node == self.node.id:
            conn = self.pool.connection(node)
            if conn is not None:
                conn.close("dialed ourselves")
        self._save_addresses()
        if node in core.membership:
            what = "voter" if node in core.membership.voters else "learner"
            promote = f"promote it with: quicraft mgmt promote {node}"
            raise MgmtFailed(
                "already_member",
                f"{node} at {address} is already a {what}",
                hint=promote if what == "learner" else None,
            )
        await self._check_unformed(node, address, before.get(node))
        log.info("adding %s at %s as a learner", node, address)
        index = await self._propose(ConfChange(ConfChangeKind.ADD_LEARNER, node))
        if not learner:
            if not await self._catch_up(core, node, CATCH_UP_TIMEOUT_S):
                raise MgmtFailed(
                    "timeout",
                    f"{node} was added as a learner but did not catch up in "
                    f"{CATCH_UP_TIMEOUT_S:g}s",
                    hint=f"it stays a learner; promote it later: quicraft mgmt promote {node}",
                )
            log.info("promoting %s: caught up", node)
            index = await self._propose(ConfChange(ConfChangeKind.PROMOTE, node))
        return {"node": node, "index": index}

    async def _check_unformed(self, node: NodeId, address: str, earlier: Hello | None) -> None:
        """Refuse a node that is a member of a cluster already, as its hello on the new
        connection says (waited for up to HELLO_WAIT_S). Its log is another cluster's: it
        would refuse our leader's messages and stay a learner that never catches up, or, of
        a cluster restored from our backup, mix two histories. Without a new hello, the last
        one heard decides: it may be of the node's run before its data was deleted, so that
        refusal says to try again; a node never heard from is added."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HELLO_WAIT_S
        while (hello := self._hellos().get(node)) is earlier and loop.time() < deadline:
            await asyncio.sleep(self.node.timings.tick_ms / 1000)
        if hello is None or not hello.formed:
            return
        which = f" (cluster id {hello.cluster_id})" if hello.cluster_id else ""
        if hello is earlier:
            raise MgmtFailed(
                "bad_request",
                f"{node} at {address} said no hello in {HELLO_WAIT_S:g}s, and its last one "
                f"said it holds the data of a cluster{which}",
                hint="if it was started again empty since, try again; otherwise stop it, "
                "delete its data directory and start it with --no-bootstrap",
            )
        raise MgmtFailed(
            "bad_request",
            f"{node} at {address} holds the data of a cluster{which}: only a node started "
            "empty can be added",
            hint="stop it, delete its data directory and start it with --no-bootstrap",
        )

    async def _catch_up(self, core: RaftCore, node: NodeId, within: float) -> bool:
        """Wait up to `within` seconds for learner `node` to catch up; whether it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if core.role is not Role.LEADER:
                raise self._not_leader(core.leader)
            if caught_up(core, node):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(self.node.timings.tick_ms / 1000)

    async def change(self, kind: ConfChangeKind, node: NodeId) -> dict[str, Any]:
        """remove_member / promote."""
        core = self._leader_core()
        self._check_member(core, node)
        change = ConfChange(kind, node)
        if kind is ConfChangeKind.PROMOTE:
            if node in core.membership.voters:
                raise MgmtFailed("already_member", f"{node} is already a voter")
            await self._ready_to_vote(core, node)
        await self._check_quorum_after(core, change)
        index = await self._propose(change)
        if kind is ConfChangeKind.REMOVE and node != self.node.id:
            self.pool.addresses.pop(node, None)
            self._save_addresses()
        return {"index": index}

    async def _ready_to_vote(self, core: RaftCore, node: NodeId) -> None:
        """Promote learner `node` only once it answers and has caught up (waiting up to a
        request's time for that): a voter that does not, or is far behind, counts in every
        quorum and can do nothing for it, so one more failure would stop the cluster."""
        if node not in await self._answering(core, [node]):
            pr = core.progress.get(node)
            silent = pr.silent_ticks * self.node.timings.tick_ms if pr is not None else None
            since = f"for {silent} ms" if silent is not None else "yet"
            raise MgmtFailed(
                "unreachable",
                f"{node} has not answered the leader {since}: a voter that does not answer "
                "only makes a quorum harder to reach",
                hint="start it, then promote it (quicraft mgmt health says when it answers)",
            )
        if not await self._catch_up(core, node, self.request_timeout):
            pr = core.progress.get(node)
            lag = core.log.last_index() - (pr.match if pr is not None else 0)
            raise MgmtFailed(
                "timeout",
                f"{node} is {lag} entries behind the leader and did not catch up in "
                f"{self.request_timeout:g}s",
                hint="promote it once it has caught up (LAG in quicraft mgmt status)",
            )

    async def _check_quorum_after(self, core: RaftCore, change: ConfChange) -> None:
        """Refuse a change after which too few of the voters answer to commit anything. It
        is in effect once appended (thesis §4.1), so it would not even commit itself: the
        cluster would stop until the silent voters came back."""
        try:
            after = change.apply_to(core.membership)
        except ValueError:
            return  # the core refuses it, saying why
        reachable = len(await self._answering(core, after.voters))
        if reachable < len(after.voters) // 2 + 1:
            raise MgmtFailed(
                "no_quorum",
                f"{change.kind.value} {change.node} would leave {reachable} of "
                f"{len(after.voters)} voters reachable, too few to commit it or anything after",
                hint="bring the voters that do not answer back first (quicraft mgmt health "
                "names them), or remove one of them instead",
            )

    async def propose_change(self, change: ConfChange) -> int:
        """Propose `change` on the leader and wait until it is applied here; its log index.
        MgmtFailed says why not (e.g. busy: another change is pending; retry later)."""
        self._leader_core()
        return await self._propose(change)

    async def _propose(self, change: ConfChange) -> int:
        """Propose `change` and wait until it is applied here; its log index."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        core = self._core
        while True:
            try:
                done = self.node.start_conf_change(change, self.request_timeout, _recorded())
                # The entry was appended just now, synchronously: it is the last one.
                index = core.log.last_index()
                break
            except NotLeader as err:
                raise self._not_leader(err.leader) from None
            except ProposalDropped as err:
                # A new leader's first entry or the previous change is not yet committed:
                # both settle within a round trip or two.
                if loop.time() >= deadline:
                    raise MgmtFailed("busy", str(err), hint="retry in a moment") from None
                await asyncio.sleep(self.node.timings.tick_ms / 1000)
            except RaftError as err:
                raise MgmtFailed("bad_request", str(err)) from None
            except NodeStopped as err:
                raise MgmtFailed("unavailable", str(err)) from None
        try:
            await done
        except RequestTimeout:
            health = self.health() if core.role is Role.LEADER else None
            if health is not None and health["reachable"] < health["voters"] // 2 + 1:
                raise MgmtFailed(
                    "no_quorum",
                    f"{change.kind.value} {change.node} was not committed: {health['problems'][0]}",
                    hint="bring voters back, or see 'when quorum is lost' in docs/operations.md",
                ) from None
            raise MgmtFailed(
                "timeout",
                f"{change.kind.value} {change.node} was not committed in time",
                hint="its outcome is unknown: check with quicraft mgmt status",
            ) from None
        except ProposalLost:
            raise MgmtFailed(
                "unavailable",
                f"{change.kind.value} {change.node} was lost to a new leader",
                hint="check with quicraft mgmt status, then retry",
            ) from None
        except NodeError as err:
            raise MgmtFailed("unavailable", str(err)) from None
        return index

    # -- snapshots and backups -----------------------------------------------------------------

    async def _snapshot(self) -> int:
        try:
            return await self.node.snapshot()
        except NodeError as err:
            raise MgmtFailed("unavailable", str(err)) from None

    async def _backup(self, request: MgmtRequest, stream: Stream) -> None:
        """Answer backup `request` on `stream`: the snapshot of a fresh index, streamed."""
        try:
            core = self._core
            if core.leader is not None:
                # Everything committed before the request is then in the snapshot. Without a
                # leader (quorum lost) the node's own state is still worth saving; with one that
                # does not confirm, the backup could miss acknowledged writes: refuse.
                try:
                    await self.node.start_read(self.request_timeout)
                except NodeError as err:
                    raise MgmtFailed(
                        "unavailable",
                        f"the leader did not confirm that this node holds every committed "
                        f"write ({err}); retry",
                    ) from None
            await self._snapshot()
            snap = core.log.snapshot  # read at once: no await between it and its data
            if snap.meta.index == 0 or not snap.meta.membership.voters:
                raise MgmtFailed(
                    "unavailable",
                    "this node has nothing to back up yet (it is not a member of a cluster)",
                )
        except MgmtFailed as err:
            stream.write_frame(error_frame(request.id, err, self._address_of))
            stream.end()
            await stream.drain()
            return
        membership = snap.meta.membership
        result = {
            "cluster_id": self._cluster_id(),
            "index": snap.meta.index,
            "term": snap.meta.term,
            "size": len(snap.data),
            "membership": {
                "voters": sorted(membership.voters),
                "learners": sorted(membership.learners),
            },
        }
        sender = BackupSender(result, id=request.id)
        stream.write_frame(sender.header)
        data = memoryview(snap.data)
        for at in range(0, len(data), BACKUP_CHUNK):
            for frame in sender.chunks(bytes(data[at : at + BACKUP_CHUNK])):
                stream.write_frame(frame)
            await stream.drain()  # flow control: never queue the whole snapshot
        stream.write_frame(sender.trailer())
        stream.end()
        try:
            await stream.drain()
        except (TransportError, ConnectionError) as err:
            # The client closes as soon as it has read the trailer, often before it has
            # acknowledged the last packets: that is the end of a backup, not a failure (a
            # client that failed says so itself).
            log.debug("backup stream closed by the client at its end: %s", err)
        log.info("sent a backup at index %d (%d bytes)", snap.meta.index, len(snap.data))


def _no_quorum(reachable: int, voters: int) -> str:
    return f"no quorum: {reachable} of {voters} voters reachable"


def _recorded() -> Span | None:
    """The current span (the operation's, see _start), if it is being recorded."""
    span = trace.get_current_span()
    return span if span.is_recording() else None
