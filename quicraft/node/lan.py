"""A node on a LAN: announce and browse by mDNS, verify every peer, form or join a cluster,
and, on the leader, add and promote the nodes that turn up (the rules are in forming.py).

Rules of this file:
- Discovery gives hints; nothing counts before it is verified. Every peer discovered (or
  found at a --join address) is dialed over quicraft-raft/1 expecting its node id, so its
  certificate must be signed by our CA for our cluster name with role node (transport/
  verify.py). A node that refuses us *after* that check (reason not_admitted: it has a
  membership without us) has proved its key too. What the verified peer announces (formed,
  cluster id) is then believed. The record itself is not signed, so a false one can delay
  forming or cause a false split report, never make anyone a member (docs/operations.md).
  An announced peer is dialed at each address it announces until one answers, and at most
  MAX_VERIFYING such dials run at once (anyone may announce any number of ids). Unverifiable
  peers are logged and retried with backoff while they are announced.
- While a fresh node waits for its verdict, its hellos say which unformed nodes it sees, and
  once it decides to join, which founder it awaits or that it joins a formed cluster
  (forming.py says why); each change is said again on every connection. What verified
  peers say of this goes into the rule.
- Nodes that met through different seeds meet each other: a deciding node's hello also says
  where it reaches the nodes it sees, and every node dials those it is not connected to
  (expecting the id they are listed under), while a connected peer still says it sees them;
  a loopback or wildcard address from a peer on another host is taken as that peer's host.
  So every node comes to see every other directly, as with mDNS, and they all count the same
  set; counting what peers see (two hops) only bridges the moments before that.
- Hellos count like mDNS: a peer that said hello on a Raft connection (peers.py) has proved
  its key with that connection, so what it says (formed, cluster id) goes into the view like
  a verified announcement, and its address is where to dial it. Without mDNS this is how the
  leader learns of a node given --join (which dials it) and a joiner learns that the cluster
  at its --join address is formed and what its id is. A member is formed whatever an older
  hello or announcement of it said (so a removed member is not added back).
- Addresses are hints, keys are identities: a verified dial records the address in the
  peer pool (PeerPool.dial) and this file persists the pool's addresses, so a member back on
  a new address is redialed there; a node restarted on its data directory is the same member.
- One loop (every LOOP_S) announces our cluster id once known, detects splits, and on the
  leader only: proposes the reserved `found` command while the cluster has no id, then runs
  forming.next_change, one membership change at a time through MgmtService (the machinery of
  `quicraft mgmt add-member` and `promote`); a refused change is retried on a later round.
- Node-local events: node_discovered when a peer is first verified, node_lost when it is no
  longer announced, cluster_split_detected once per other cluster id (logged as a warning,
  and reported by mgmt health for as long as it lasts).
- Traced (tracing on), each a trace of its own: every attempt to verify a hint
  (discovery.verify, with its source and outcome); a fresh node's wait for the forming verdict
  (forming.decide) and, when it is to join, its wait until a leader adds it (forming.join); on
  the leader, giving the cluster its id (forming.found) and each change the loop makes
  (forming.add_learner, forming.promote), with the Raft spans of their entries under them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from functools import partial
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from quicraft.core import ConfChange, ConfChangeKind, RaftError, Role
from quicraft.discovery import Announcement, DiscoveredPeer, Discovery, PeerEvent, PeerEventKind
from quicraft.statemachine import FOUND_OP, encode_command
from quicraft.telemetry import Tracing
from quicraft.transport import RefusedError, TransportError
from quicraft.transport.address import (
    Address,
    format_address,
    is_loopback,
    is_unspecified,
    parse_address,
)
from quicraft.wire import Hello

from .event_feed import EventFeed
from .forming import (
    UNKNOWN_CLUSTER,
    FormingRule,
    Verdict,
    next_change,
    other_clusters,
    waiting_for,
)
from .mgmt import MgmtFailed, MgmtService, caught_up
from .peers import PeerPool
from .runtime import NodeError, RaftNode
from .settings import NodeSettings

log = logging.getLogger("quicraft.lan")

LOOP_S = 0.3
VERIFY_RETRY_S = (0.5, 8.0)  # first and longest wait between attempts to verify a peer
JOIN_REFRESH_S = 5.0  # how often a --join address is dialed again (its state may change)
#: At most this many dials verify announced peers at once: anyone on the LAN may announce any
#: number of node ids, and each dial holds a UDP socket until it answers or times out.
MAX_VERIFYING = 8


@dataclass(frozen=True, slots=True)
class Verified:
    node_id: str
    name: str | None
    address: Address
    #: The cluster id it announces; None: not a member of a formed cluster.
    cluster_id: str | None


class LanForming:
    def __init__(
        self,
        settings: NodeSettings,
        pool: PeerPool,
        raft: RaftNode,
        mgmt: MgmtService,
        events: EventFeed,
        *,
        cluster_id: Callable[[], str | None],
        removed: Callable[[], Set[str]],
        save_addresses: Callable[[], None],
        addresses: list[str],
        tracing: Tracing,
    ):
        self.settings = settings
        self.id = pool.id
        self.pool = pool
        self.raft = raft
        self.mgmt = mgmt
        self.events = events
        self._cluster_id = cluster_id
        self._removed = removed
        self._save_addresses = save_addresses
        self.discovery: Discovery | None = None
        if settings.discovery.enabled:
            me = Announcement(
                settings.cluster, self.id, settings.name, settings.listen[1], cluster_id()
            )
            self.discovery = Discovery(
                me,
                addresses=addresses,
                interfaces=settings.discovery.interfaces,
                on_event=self._on_event,
            )
        #: Node id (or "join@host:port" for a --join address that refused us) -> what we know.
        self.verified: dict[str, Verified] = {}
        #: Dials in flight, by node id (mDNS), "relay@id" (an address a peer gave) or
        #: "knock@address" (a leader to say hello to).
        self._verifying: dict[str, asyncio.Task[Any]] = {}
        self._dials = asyncio.Semaphore(MAX_VERIFYING)  #: of announced peers (mDNS)
        self._tasks: list[asyncio.Task[None]] = []
        self._change: asyncio.Task[None] | None = None
        self._announced = cluster_id()
        self._opened = False
        self._closed = False  #: close() began: hellos start no more dials
        self._splits: dict[str, list[str]] = {}
        self._warned: set[str] = set()
        self._complained: set[str] = set()
        self._passed_over: set[str] = set()  #: removed nodes the autopilot said it leaves out
        self.tracing = tracing
        #: forming.join: from the verdict "join" until a leader has added this node.
        self._joining: Span | None = None
        #: What verified peers said in their hellos: the unformed nodes each sees while it
        #: decides, which of them join a formed cluster, and whom the others await.
        self._seen_by: dict[str, frozenset[str]] = {}
        self._peers_joining: set[str] = set()
        self._peers_await: dict[str, str] = {}
        #: Where deciding peers say they reach the nodes they see (the latest said).
        self._relayed: dict[str, Address] = {}
        #: What this node's hellos say while it decides (`seen`, `seen_at`), and once it joins.
        self.seeing: tuple[str, ...] | None = None
        self.seeing_at: dict[str, str] | None = None
        self.joining = False
        self.awaits: str | None = None
        mgmt.extra_problems = self.problems

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Announce, browse and dial the --join addresses (before Raft opens: the forming
        decision needs them)."""
        if self.discovery is not None:
            await self.discovery.start()
        for address in self.settings.discovery.join:
            self._tasks.append(asyncio.create_task(self._join_hint(address)))

    async def decide(self) -> bool:
        """For a fresh node: wait for the forming verdict; True to found the cluster."""
        span = self.tracing.span(
            "forming.decide",
            attributes={"quicraft.cluster": self.settings.cluster,
                        "forming.expect": self.settings.expect},
        )  # fmt: skip
        with span:  # ended however the wait ends (a stop cancels it)
            verdict, awaited, others = await self._wait_for_verdict()
            span.set_attribute("forming.verdict", verdict.name.lower())
            span.set_attribute("forming.seen", len(others) + 1)
        self.seeing = self.seeing_at = None
        self.joining = verdict is Verdict.JOIN and awaited is None
        self.awaits = awaited
        self.pool.say_hello_again()
        if verdict is Verdict.FOUND:
            log.info("forming %s: founding it (lowest id; others: %s)", self.settings.cluster,
                     ", ".join(others) or "none")  # fmt: skip
            return True
        log.info("forming %s: waiting for the leader to add this node (%s)",
                 self.settings.cluster, self.id)  # fmt: skip
        self._joining = self.tracing.span(
            "forming.join", attributes={"quicraft.cluster": self.settings.cluster}
        )
        return False

    async def _wait_for_verdict(self) -> tuple[Verdict, str | None, list[str]]:
        """The forming verdict, once there is one, the founder awaited (for a JOIN that
        waits for one), and the other unformed nodes seen."""
        rule = FormingRule(self.id, self.settings.expect)
        loop = asyncio.get_running_loop()
        last = None
        while True:
            view = self._connected_view()
            seeing = tuple(sorted(rule.seen(view)))
            peers = (n for n in seeing if n != self.id)
            seeing_at = {n: format_address(self.verified[n].address) for n in peers}
            if (seeing, seeing_at) != (self.seeing, self.seeing_at):
                self.seeing, self.seeing_at = seeing, seeing_at
                self.pool.say_hello_again()
            verdict = rule.decide(
                loop.time(), view, self._seen_by, self._peers_joining, self._peers_await
            )
            if verdict is not Verdict.WAIT:
                break
            seen = len(rule.unformed(view, self._seen_by))
            if seen != last:
                log.info(
                    "forming %s: %s", self.settings.cluster, waiting_for(seen, self.settings.expect)
                )
                last = seen
            await asyncio.sleep(0.2)
        others = sorted(rule.unformed(self._connected_view(), self._seen_by) - {self.id})
        return verdict, rule.awaited, others

    def opened(self) -> None:
        """Raft is open and the event journal started: report and run the loop."""
        self._opened = True
        for peer in self.verified.values():
            self._discovered_event(peer)
        self._tasks.append(asyncio.create_task(self._loop(), name="lan"))

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._tasks, *self._verifying.values()]
        if self._change is not None:
            tasks.append(self._change)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.discovery is not None:
            await self.discovery.close()
        if self._joining is not None:
            self._joining.set_status(StatusCode.ERROR, "stopped before a leader added it")
            self._joining.end()
            self._joining = None

    # -- what we see -----------------------------------------------------------------------

    def view(self) -> dict[str, str | None]:
        return {key: peer.cluster_id for key, peer in self.verified.items()}

    def _connected_view(self) -> dict[str, str | None]:
        """The view less the peers whose Raft connection has closed: a node that went away
        before forming is not counted (without mDNS nothing else says that it left, and the
        lowest id counted is the one every node waits for)."""
        return {
            key: cid
            for key, cid in self.view().items()
            if key.startswith("join@") or self.pool.connection(key) is not None
        }

    def problems(self) -> list[str]:
        return [
            f"split: node {nodes[0]} at {self._where(nodes[0])} announces cluster "
            f"{self.settings.cluster} with id {other}, not ours ({self._announced})"
            for other, nodes in sorted(self._splits.items())
        ]

    def _where(self, key: str) -> str:
        peer = self.verified.get(key)
        return format_address(peer.address) if peer is not None else "an unknown address"

    # -- discovery and verification --------------------------------------------------------

    def _on_event(self, event: PeerEvent) -> None:
        peer = event.peer
        running = self._verifying.pop(peer.node_id, None)
        if running is not None:
            running.cancel()
        if event.kind is PeerEventKind.LOST:
            gone = self.verified.pop(peer.node_id, None)
            if gone is not None:
                log.info("lost %s (%s): no longer announced", peer.node_id, peer.name)
                if self._opened:
                    self.events.local("node_lost", {"node": peer.node_id})
            return
        task = asyncio.get_running_loop().create_task(self._verify(peer))
        self._verifying[peer.node_id] = task

    async def _verify(self, peer: DiscoveredPeer) -> None:
        delay = VERIFY_RETRY_S[0]
        while (address := await self._dial_announced(peer)) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, VERIFY_RETRY_S[1])
        found = Verified(peer.node_id, peer.name, address, peer.cluster_id)
        first = peer.node_id not in self.verified
        self.verified[peer.node_id] = found
        self._complained.discard(peer.node_id)
        if first:
            formed = f"formed, cluster id {peer.cluster_id}" if peer.formed else "not formed"
            log.info("verified %s (%s) at %s: %s", peer.node_id, peer.name,
                     format_address(peer.address), formed)  # fmt: skip
            if self._opened:
                self._discovered_event(found)
        if self._verifying.get(peer.node_id) is asyncio.current_task():
            del self._verifying[peer.node_id]

    async def _dial_announced(self, peer: DiscoveredPeer) -> Address | None:
        """Dial each address `peer` announces, best first, until one proves its key: the best
        may be one this node cannot reach (another interface of the peer's, a container
        bridge). Returns where it answered, or None."""
        port = peer.address[1]
        for host in peer.addresses or (peer.address[0],):
            async with self._dials:
                if await self._check(peer.node_id, (host, port), "mdns"):
                    return host, port
        return None

    def _attempt(self, source: str, address: Address, node_id: str | None) -> Span:
        """The span of one attempt to verify a hint from `source` (mdns, join, knock, relay)."""
        attributes: dict[str, str | int] = {
            "discovery.source": source, "server.address": address[0], "server.port": address[1]
        }  # fmt: skip
        if node_id is not None:
            attributes["quicraft.peer"] = node_id
        return self.tracing.span("discovery.verify", kind=SpanKind.CLIENT, attributes=attributes)

    async def _check(self, node_id: str | None, address: Address, source: str) -> bool:
        """Dial `address` expecting `node_id`: whether the node there proved it."""
        key = node_id or format_address(address)
        with self._attempt(source, address, node_id) as span:
            try:
                before = self.pool.addresses.get(node_id) if node_id else None
                found = await self.pool.dial(address, expect=node_id)
                _verified(span, found)
                if found != self.id and before != address:
                    self._save_addresses()  # a new address of a member is persisted
                return True
            except RefusedError as err:
                if err.reason == "not_admitted":
                    _verified(span, None)
                    return True  # it passed our checks, then refused us: not its member
                problem = f"refused: {err}"
            except TransportError as err:
                problem = str(err)
            span.set_status(StatusCode.ERROR, problem)
        if key not in self._complained:  # once per peer, then quietly while retrying
            self._complained.add(key)
            log.warning("cannot verify %s at %s: %s; ignoring it until it can be",
                        key, format_address(address), problem)  # fmt: skip
        return False

    async def _join_hint(self, address: Address) -> None:
        """Dial a --join address now and then: what answers is a verified hint."""
        key = f"join@{format_address(address)}"
        while True:
            with self._attempt("join", address, None) as span:
                try:
                    node = await self.pool.dial(address)
                except RefusedError as err:
                    if err.reason == "not_admitted":
                        # A formed cluster that we are not a member of: join it, never found.
                        self.verified[key] = Verified(key, None, address, UNKNOWN_CLUSTER)
                        _verified(span, None)
                    else:
                        span.set_status(StatusCode.ERROR, f"refused: {err}")
                except TransportError as err:
                    log.debug("--join %s: %s", format_address(address), err)
                    span.set_status(StatusCode.ERROR, str(err))
                else:
                    _verified(span, node)
                    self._save_addresses()
                    # Its hello, when it comes, says whether it is formed; until then, unformed.
                    if node != self.id and node not in self.verified:
                        known = self.verified.get(node)
                        cid = known.cluster_id if known is not None else None
                        self.verified[node] = Verified(node, None, address, cid)
            await asyncio.sleep(JOIN_REFRESH_S)

    def heard_hello(self, node_id: str, name: str, address: Address, hello: Hello) -> None:
        """A peer said hello on an authenticated Raft connection: a verified peer (its name
        is its certificate's)."""
        if self._closed:
            return  # it would start dials that nothing stops
        cid = (hello.cluster_id or UNKNOWN_CLUSTER) if hello.formed else None
        if hello.seen is None:
            self._seen_by.pop(node_id, None)
        else:
            self._seen_by[node_id] = frozenset(hello.seen)
        if hello.seen_at is not None:
            self._meet(address, hello.seen_at)
        if hello.joining:
            self._peers_joining.add(node_id)
        else:
            self._peers_joining.discard(node_id)
        if hello.awaits is None:
            self._peers_await.pop(node_id, None)
        else:
            self._peers_await[node_id] = hello.awaits
        known = self.verified.get(node_id)
        found = Verified(node_id, name, address, cid)
        self.verified[node_id] = found
        self._complained.discard(node_id)
        # First hello: unknown, or known only from dialling it (a --join address), which may
        # complete before or after its hello arrives.
        if known is None or known.name is None:
            formed = f"formed, cluster id {cid}" if hello.formed else "not formed"
            log.info("verified %s at %s by its hello: %s", node_id, format_address(address),
                     formed)  # fmt: skip
            if self._opened:
                self._discovered_event(found)
        if hello.leader is not None and not self._is_member():
            self._knock(hello.leader)

    def _meet(self, via: Address, seen_at: Mapping[str, str]) -> None:
        """Dial the nodes a deciding peer (reached at `via`) sees at the addresses it gives,
        where this node is not connected to them yet."""
        for node, where in seen_at.items():
            try:
                host, port = parse_address(where)
            except ValueError:
                continue
            if node == self.id:
                continue
            if (is_loopback(host) or is_unspecified(host)) and not is_loopback(via[0]):
                host = via[0]  # the peer reaches it on its own host: that host, from here
            self._relayed[node] = (host, port)
            # Its own key: a verification of an announced address may be retrying one that
            # never answers, and must not keep this one from being dialed.
            key = f"relay@{node}"
            if key not in self._verifying and self.pool.connection(node) is None:
                dial = asyncio.get_running_loop().create_task(self._dial_relayed(node))
                self._verifying[key] = dial
                dial.add_done_callback(partial(self._forget_attempt, key))

    async def _dial_relayed(self, node: str) -> None:
        """Until connected to `node`, while a connected peer says it sees it: retried with
        backoff, as a node announced by mDNS is."""
        delay = VERIFY_RETRY_S[0]
        while self.pool.connection(node) is None and self._still_relayed(node):
            if await self._check(node, self._relayed[node], "relay"):
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, VERIFY_RETRY_S[1])

    def _forget_attempt(self, key: str, _: asyncio.Task[Any]) -> None:
        self._verifying.pop(key, None)

    def _still_relayed(self, node: str) -> bool:
        return any(
            node in seen and self.pool.connection(peer) is not None
            for peer, seen in self._seen_by.items()
        )

    def _is_member(self) -> bool:
        core = self.raft.core
        return core is not None and self.id in core.membership.members()

    def _knock(self, leader: str) -> None:
        """Dial the leader a member's hello named, so that it hears our hello: only a leader
        adds members, and a --join address may be a follower's."""
        key = f"knock@{leader}"
        if key in self._verifying:
            return
        try:
            address = parse_address(leader)
        except ValueError:
            return
        task = asyncio.get_running_loop().create_task(self._check(None, address, "knock"))
        self._verifying[key] = task
        task.add_done_callback(partial(self._forget_attempt, key))

    def _discovered_event(self, peer: Verified) -> None:
        if peer.node_id.startswith("join@"):
            return
        data = {"node": peer.node_id, "name": peer.name, "address": format_address(peer.address)}
        self.events.local("node_discovered", data)

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self._step()
            except Exception:
                log.exception("lan: a forming step failed")
            await asyncio.sleep(LOOP_S)

    async def _step(self) -> None:
        cid = self._cluster_id()
        if cid != self._announced:
            self._announced = cid
            log.info("member of cluster %s, id %s", self.settings.cluster, cid)
            if self.discovery is not None:
                await self.discovery.set_formed(cid)
        core = self.raft.core
        if core is not None and cid is not None:
            members = core.membership.members()
            for key, peer in list(self.verified.items()):
                if peer.cluster_id is None and key in members:
                    self.verified[key] = Verified(key, peer.name, peer.address, cid)
        self._check_split(cid)
        if self._joining is not None and core is not None and self._is_member():
            self._joining.set_attribute("raft.term", core.term)
            self._joining.end()  # a leader added us
            self._joining = None
        if core is None or core.role is not Role.LEADER:
            return
        if self._change is not None and not self._change.done():
            return
        if cid is None:
            self._change = asyncio.create_task(self._found())
            return
        view = self.view()
        candidates = {
            n for n, c in view.items()
            if c is None and not n.startswith("join@")
            and not self.mgmt.being_added(n, self.verified[n].address)
        }  # fmt: skip
        candidates -= self._left_out(candidates)
        heard = {n for n, pr in core.progress.items()
                 if pr.silent_ticks < core.config.election_tick}  # fmt: skip
        ready = {n for n in core.membership.learners if n in heard and caught_up(core, n)}
        change = next_change(
            core.membership.voters, core.membership.learners, ready, candidates,
            self.settings.voters,
        )  # fmt: skip
        if change is not None:
            self._change = asyncio.create_task(self._apply(change))

    def _left_out(self, candidates: Set[str]) -> set[str]:
        """The candidates that were removed from the cluster: a node key is no less valid for
        its node's removal, and one that forgets its data must not be taken back by itself.
        An operator adds it back (mgmt add-member), which takes it off the list."""
        removed = set(candidates & self._removed())
        for node in sorted(removed - self._passed_over):
            peer = self.verified[node]
            log.warning(
                "not adding %s (%s) at %s: it was removed from cluster %s; to take it back: "
                "quicraft mgmt add-member %s",
                node, peer.name or "no name", format_address(peer.address),
                self.settings.cluster, format_address(peer.address),
            )  # fmt: skip
        self._passed_over = removed
        return removed

    async def _found(self) -> None:
        """Give the cluster its id: the first `found` applied wins, on every member."""
        cluster_id = secrets.token_hex(16)
        data = encode_command(FOUND_OP, {"cluster_id": cluster_id}, int(time.time() * 1000))
        with self.tracing.span("forming.found") as span:
            request = span if span.is_recording() else None
            try:
                await self.raft.start_proposal(data, self.mgmt.request_timeout, request)
            except (RaftError, NodeError) as err:
                log.debug("lan: proposing the cluster id failed: %s", err)
                span.set_status(StatusCode.ERROR, str(err))
                return
            winner = self._cluster_id()  # ours, or one proposed before ours was applied
            span.set_attribute("quicraft.cluster_id", str(winner))
        log.info("cluster %s has the id %s", self.settings.cluster, winner)

    async def _apply(self, change: ConfChange) -> None:
        adding = change.kind is ConfChangeKind.ADD_LEARNER
        log.info("autopilot: %s %s", "adding as a learner" if adding else "promoting", change.node)
        name = "forming.add_learner" if adding else "forming.promote"
        span = self.tracing.span(name, attributes={"quicraft.peer": change.node})
        with trace.use_span(span, end_on_exit=True):  # MgmtService traces the change under it
            try:
                await self.mgmt.propose_change(change)
            except MgmtFailed as err:
                log.info("autopilot: %s %s failed (%s); will retry", change.kind.value,
                         change.node, err.message)  # fmt: skip
                span.set_status(StatusCode.ERROR, f"{err.code}: {err.message}")

    def _check_split(self, cid: str | None) -> None:
        self._splits = other_clusters(cid, self.view())
        for other, nodes in self._splits.items():
            if other in self._warned:
                continue
            self._warned.add(other)
            node = nodes[0]
            peer = self.verified.get(node)
            address = format_address(peer.address) if peer is not None else None
            log.warning(
                "cluster split: %s at %s announces cluster %s with id %s, but ours is %s; "
                "two clusters of one name formed apart (see docs/operations.md)",
                node, address, self.settings.cluster, other, cid,
            )  # fmt: skip
            if self._opened and cid is not None:
                self.events.local("cluster_split_detected", {
                    "cluster": self.settings.cluster, "cluster_id": cid,
                    "other_cluster_id": other, "other_node": node, "address": address,
                })  # fmt: skip


def _verified(span: Span, node_id: str | None) -> None:
    """The attempt proved the peer's key (`node_id`: who it is; None: it refused us after)."""
    span.set_attribute("discovery.outcome", "verified" if node_id else "not_admitted")
    if node_id is not None:
        span.set_attribute("quicraft.peer", node_id)
