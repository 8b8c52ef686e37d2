"""A whole node: identity, LevelDB storage, the key-value store, the Raft runtime, its peers
and the QUIC services, started and stopped together.

Forming a cluster from static peers: a node with no stored state dials every `--peers`
address until all have answered and proved to be nodes of this cluster; the founding
membership is then this node plus those peers. Every founder derives the same founding
entries from the same set (core.bootstrap_state), so it does not matter which starts first.
Before founding, the founders compare their sets through their hellos (forming.founders_agree):
a node never founds a set that another founder disagrees with. A node stores its set before it
says it and, started again, says no other and joins no other cluster (peers that heard it may
found it with us still), unless a founder of it is in a cluster already. A node with stored
state never bootstraps again.

Lost data: this node remembers (in storage meta) every member it has heard vote, lead or
acknowledge entries, and tells each peer in its hello whether it remembers that peer. It
forgets the ones that the membership no longer holds, judged by the newest configuration in
its log (so a REMOVE replayed after a restart does not forget a member added back since) when
a REMOVE is applied or a snapshot installed (which may cover one). A learner counts too: it
gave no vote, but a leader never sends a member entries below what it acknowledged, so one
that lost its data would stay empty. A node with no stored state that a peer remembers has
lost its data: it stops (FoundingError) with the way back, instead of founding or joining as
new, which would forget the votes it gave.

Forming on a LAN (settings.forming: mDNS, --join, or `quicraft node` without --peers): lan.py
announces the node, verifies the peers it finds, and a fresh node without --peers waits for
the forming verdict (forming.py): found a cluster of one voter, itself, or wait to be added by
the leader, which then adds and promotes the others. The cluster id the founder gives the
cluster is replicated (the KV store's reserved `found` command) and also kept in this node's
storage meta, so a restarted node announces it before it has applied its log again.

Hellos (peers.py): this node tells every Raft peer where it serves, whether it is formed and
its cluster id; what peers tell it lands in the pool's addresses (persisted) and, with LAN
forming on, in lan.py, which then treats the peer like one found by mDNS. With LAN forming
on, Raft connections from non-members are admitted so that their hellos can arrive (a node
given --join dials the leader, which cannot dial back before it knows where); their Raft
messages are still dropped (_deliver) until they are members. The leader also publishes every
member's address through the log (address_book.py), so members that never met can dial
each other.

A member whose log is behind may not know that the current leader is a member (it was added
while this node was down). Refusing it would keep this node behind for as long as that node
leads, so a node also heeds the leader that a member of its own configuration names in its
hello (`_heeded`), and dials that leader itself (`_meet`), since the leader may not know
where this node serves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import cbor2
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export import SpanExporter

from quicraft.core import (
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryType,
    Message,
    MessageType,
    NodeId,
    RaftCore,
    Role,
    Snapshot,
    SoftState,
)
from quicraft.discovery import announce_addresses
from quicraft.statemachine import KVStore
from quicraft.storage import LevelDBStorage, StorageError, check_hard_state
from quicraft.telemetry import Readings, Telemetry, start_telemetry
from quicraft.transport import (
    ALPN_CLIENT,
    ALPN_EVENTS,
    ALPN_MGMT,
    ALPN_RAFT,
    Connection,
    IdentityError,
    Peer,
    Refusal,
    RefusedError,
    Server,
    TransportError,
    load_identity,
    serve,
)
from quicraft.transport import Role as IdentityRole
from quicraft.transport.address import Address, format_address, parse_address
from quicraft.wire import Hello

from .address_book import AddressBook
from .data_owner import DataOwner, claim
from .event_feed import EventFeed
from .event_service import EventService
from .events import EventJournal
from .forming import FoundingError, NeverFounded, founders_agree
from .lan import LanForming
from .mgmt import MgmtService
from .peers import PeerPool
from .removal import (
    Refusals,
    RemovedFromCluster,
    committed_without,
    left_out_at,
    refusal_detail,
)
from .runtime import NodeStopped, RaftNode, is_fresh
from .service import ClientService
from .settings import NodeSettings
from .version import build_text

log = logging.getLogger("quicraft.node")

ADDRESSES_KEY = "addresses"
CLUSTER_ID_KEY = "cluster_id"
FOUNDERS_KEY = "founders"
REMEMBERED_KEY = "remembered_members"
_CLUSTER_ID = re.compile(r"[0-9a-f]{8,64}")
DIAL_RETRY_S = 0.5
#: While founders wait for each other's sets: say ours again, and log who is awaited.
AGREE_RETRY_S = 2.0


class Node:
    """One member of a cluster, run in the caller's event loop: start(), then wait() or
    stop(). It runs the built-in key-value store (docs/node.md, "Embedding a node")."""

    def __init__(self, settings: NodeSettings, span_exporters: Sequence[SpanExporter] = ()):
        """`span_exporters`: where spans go besides what settings.telemetry names (tests)."""
        self.settings = settings
        self._span_exporters = span_exporters
        self.telemetry = Telemetry()
        self.identity = load_identity(settings.certs_dir, settings.cluster, settings.name)
        if self.identity.role is not IdentityRole.NODE:
            raise IdentityError(
                f"identity {settings.name!r} has role {self.identity.role.value}; a node needs "
                f"role node (quicraft certs issue --role node)"
            )
        self.id = self.identity.node_id
        self.storage = LevelDBStorage(settings.data_dir)
        try:
            owner = DataOwner(self.id, settings.name, settings.cluster)
            claim(self.storage, owner, settings.data_dir)
        except BaseException:
            self.storage.close()
            raise
        self.kv = KVStore(session_timeout_ms=settings.timings.session_timeout_ms)
        self.pool = PeerPool(self.identity, self._deliver, self._unreachable, self._snapshot_sent)
        self.pool.hello, self.pool.on_hello = self._hello, self._heard_hello
        self.pool.on_refused = self._refused_by
        self.raft = RaftNode(self.id, self.storage, self.kv, settings.timings, self.pool.send)
        timeout = max(5.0, 4 * settings.timings.election_timeout_s())
        self.service = ClientService(self.raft, self.kv, self.address_of, timeout)
        # Events: the feed hears the store and the runtime; the service serves the journal.
        self.events = EventFeed(EventJournal(), self.id, self.address_of)
        self.events.attach(self.raft, self.kv)
        self._feed_applied = self.raft.on_applied
        self.raft.on_applied = self._applied
        self._feed_snapshot = self.raft.on_snapshot
        self.raft.on_snapshot = self._snapshot
        self._feed_soft_state = self.raft.on_soft_state
        self.raft.on_soft_state = self._soft_state
        self.event_service = EventService(self.events.journal)
        self.mgmt = MgmtService(
            self.raft,
            self.pool,
            name=settings.name,
            address_of=self.address_of,
            published_name=lambda node: self.kv.names.get(node),
            save_addresses=self._save_addresses,
            request_timeout=timeout,
            cluster_id=self.cluster_id,
            hellos=lambda: self._said,
        )
        stored_cid = (self.storage.get_meta(CLUSTER_ID_KEY) or b"").decode("ascii", "replace")
        self._stored_cluster_id = stored_cid if _CLUSTER_ID.fullmatch(stored_cid) else None
        self.advertised: Address = settings.listen
        self.address_book = AddressBook(
            self.raft, self.kv, self.pool, lambda: self.advertised, self._save_addresses, timeout
        )
        self.lan: LanForming | None = None
        self.server: Server | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        # Founding and lost data (see above).
        self._founders: tuple[NodeId, ...] | None = None  # our static founding set
        self._remembered = set(self._stored_ids(REMEMBERED_KEY) or ())
        self._said: dict[NodeId, Hello] = {}  # each peer's latest hello
        self._leader_said: NodeId | None = None  # the leader our hellos name
        self._meeting: dict[NodeId, asyncio.Task[None]] = {}  # leaders we dial (_meet)
        self._started = self._stopped = False
        self._starting: asyncio.Task[None] | None = None  # start()'s work (stop() may cancel it)
        self._stopping = False
        self._names: dict[NodeId, str] = {self.id: settings.name}
        self._started_fresh = False
        self._refusal: FoundingError | None = None  # found while starting: start() raises it
        self._news = asyncio.Event()  # a hello arrived
        self._refused_us = Refusals(self.id)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve, found or join the cluster, and run Raft. A Node starts once: when start()
        fails (or is cancelled), it stops the node again, so that the data directory, the
        port and every task are free for a new Node."""
        if self._started or self._stopped:
            raise RuntimeError("a Node starts once: make a new Node(settings) to start again")
        self._started = True
        # A task of its own, which stop() may cancel without cancelling our caller.
        self._starting = asyncio.create_task(self._start(), name=f"{self.id}-start")
        try:
            await self._starting
        except asyncio.CancelledError:
            await self.stop(hand_over=False)
            caller = asyncio.current_task()
            if caller is not None and caller.cancelling():
                raise
            raise NodeStopped("stop() was called while the node was starting") from None
        except BaseException:
            await self.stop(hand_over=False)
            raise

    async def _start(self) -> None:
        self.telemetry = start_telemetry(self.settings.telemetry, self.id, self._span_exporters)
        self._instrument()
        self.pool.addresses.update(self._stored_addresses())
        host, port = self.settings.listen
        self.server = await serve(
            host,
            port,
            self.identity,
            handlers={
                ALPN_RAFT: self.pool.handle_stream,
                ALPN_CLIENT: self.service.handle_stream,
                ALPN_MGMT: self.mgmt.handle_stream,
                ALPN_EVENTS: self.event_service.handle_stream,
            },
            admit=self._admit,
            on_connection=self._on_connection,
            max_per_identity=self.settings.max_connections_per_identity,
        )
        log.info(
            "node %s (%s) listening on %s; %s",
            self.id,
            self.settings.name,
            format_address((host, port)),
            build_text(),
        )
        if self.telemetry.metrics_server is not None:
            where = format_address(self.telemetry.metrics_server.address)
            log.info("serving metrics at http://%s/metrics", where)
        state = self.storage.load()
        check_hard_state(state, self.settings.data_dir)
        self._started_fresh = is_fresh(state)
        if not self._started_fresh:
            self._founders = self._stored_ids(FOUNDERS_KEY) or None  # () : a set given up
        elif not self.settings.peers:  # to be added (--no-bootstrap), or to form on a LAN
            self._keep_promise(frozenset(self._stored_ids(FOUNDERS_KEY) or ()), None, True)
        if self.settings.forming:
            # On the wildcard, tell peers and clients an address of ours on the LAN.
            announced = announce_addresses(host, self.settings.discovery.interfaces)
            self.advertised = (announced[0], port)
            self.lan = LanForming(
                self.settings, self.pool, self.raft, self.mgmt, self.events,
                cluster_id=self.cluster_id, removed=lambda: self.kv.removed,
                save_addresses=self._save_addresses,
                addresses=announced, tracing=self.telemetry.tracing,
            )  # fmt: skip
            await self.lan.start()
        founders: list[NodeId] | None = None
        if is_fresh(state) and self.settings.wait_to_be_added:
            # Empty membership: the core neither campaigns nor refuses anyone of the cluster,
            # so the first leader that adds us (mgmt add_member) brings the log.
            log.info("waiting for an existing cluster to add this node (%s)", self.id)
        elif is_fresh(state) and self.lan is not None and not self.settings.peers:
            founders = [self.id] if await self.lan.decide() else None
        elif is_fresh(state):
            founders = [self.id, *await self._reach_founders()]
        if founders is None:
            # Dial the --peers we did not found with, in the background: addresses may have
            # changed while we were down, and a leader still sending to our previous process
            # learns of this one only when it hears from it (QUIC would notice in 30 s).
            self._background = [
                asyncio.create_task(self._learn(address)) for address in self.settings.peers
            ]
        if self._refusal is not None:
            raise self._refusal
        self._background.append(asyncio.create_task(self.address_book.run()))
        self._save_addresses()
        self.raft.open(state, founders, where=self.settings.data_dir)
        self.events.opened()
        self._run_task = asyncio.create_task(self.raft.run(), name="raft")
        self._stop_if_removed()  # hellos heard while starting may have said so already
        if self.lan is not None:
            self.lan.opened()

    async def stop(self, hand_over: bool = True) -> None:
        """Stop serving; a leader first hands leadership to the most caught-up voter.
        Only the first call does anything."""
        if self._stopped:
            return
        self._stopped = self._stopping = True
        if self._starting is not None and not self._starting.done():
            # start() may wait for founding peers for ever, and must not go on once the
            # storage below is closed: it ends with NodeStopped.
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        running = self._run_task is not None and not self._run_task.done()
        if hand_over and running and self.raft.core is not None:
            await self.raft.hand_over_leadership()
        self.raft.stop()
        self.mgmt.close()
        if self.lan is not None:
            await self.lan.close()
        for task in [*self._background, *self._meeting.values()]:
            task.cancel()
        if self._run_task is not None:
            await asyncio.gather(self._run_task, return_exceptions=True)  # wait() reports it
        await self.event_service.close()
        await self.pool.close()
        if self.server is not None:
            self.server.close()
            await asyncio.sleep(0)  # the UDP socket closes on the loop's next turn: port free
        self.storage.close()
        self.telemetry.close()
        log.info("node %s stopped", self.id)

    async def wait(self) -> None:
        """Until the Raft loop ends (stop() or a fatal error, which is re-raised)."""
        if self._run_task is not None:
            await self._run_task

    @property
    def leader(self) -> NodeId | None:
        """The id of the leader as this node sees it now (its own `id` while it leads), or
        None: not started, stopped, or no leader known (an election is under way)."""
        core = self.raft.core
        return core.leader if core is not None and not self._stopping else None

    # -- telemetry -------------------------------------------------------------------------

    def log_context(self) -> dict[str, object]:
        """What every JSON log line of this node says about it."""
        core = self.raft.core
        return {"node": self.id} if core is None else {"node": self.id, "term": core.term}

    def _instrument(self) -> None:
        tracing, metrics = self.telemetry.tracing, self.telemetry.metrics
        self.raft.instrument(self.telemetry)
        self.pool.tracing, self.pool.metrics = tracing, metrics
        self.service.tracing = self.mgmt.tracing = self.event_service.tracing = tracing
        raft = self.raft

        def core_value(read: Callable[[RaftCore], float]) -> Callable[[], Readings]:
            return lambda: [] if raft.core is None else [(read(raft.core), {})]

        metrics.gauge(
            "quicraft.has_leader",
            "1 while this node knows a leader, else 0",
            core_value(lambda core: float(core.leader is not None)),
        )
        metrics.gauge("quicraft.term", "the current term", core_value(lambda core: core.term))
        metrics.gauge(
            "quicraft.commit_index",
            "the highest log index known to be committed",
            core_value(lambda core: core.log.committed),
        )
        metrics.gauge(
            "quicraft.applied_index",
            "the highest log index applied to the state machine",
            core_value(lambda core: core.log.applied),
        )
        metrics.gauge(
            "quicraft.peer.rtt",
            "smoothed QUIC round-trip time to each connected member",
            self.pool.round_trip_times,
            unit="s",
        )
        metrics.gauge(
            "quicraft.follower.lag",
            "on the leader: entries of its log each other member does not hold yet",
            self._follower_lag,
        )
        metrics.counter(
            "quicraft.refused_connections",
            "connections refused, by reason",
            self._refusals,
        )
        metrics.gauge(
            "quicraft.event_subscribers",
            "event subscriptions being served",
            lambda: [(self.event_service.subscribers, {})],
        )
        metrics.gauge(
            "quicraft.discovered_peers",
            "peers found by mDNS or --join and verified as nodes of this cluster",
            lambda: [(len(self.lan.verified) if self.lan is not None else 0, {})],
        )

    def _follower_lag(self) -> Readings:
        core = self.raft.core
        if core is None or core.role is not Role.LEADER:
            return []  # only the leader knows what each member holds
        last = core.log.last_index()
        members = list(core.progress.items())  # one C call: the loop thread may change it
        return [(max(0, last - pr.match), {"peer": n}) for n, pr in members if n != self.id]

    def _refusals(self) -> Readings:
        refusals = self.server.refusals if self.server is not None else {}
        return [(count, {"reason": reason}) for reason, count in list(refusals.items())]

    # -- founding --------------------------------------------------------------------------

    async def _reach_founders(self) -> list[NodeId]:
        """The other founders: every --peers address reached and proved to be a node of this
        cluster, and each of them saying it founds the same set (forming.founders_agree)."""
        said = frozenset(self._stored_ids(FOUNDERS_KEY) or ())  # by this node before a stop
        pending = list(self.settings.peers)
        found: list[NodeId] = []
        ourselves: list[str] = []  # --peers that reached this very node (localhost, say)
        while pending and self._refusal is None:
            results = await asyncio.gather(
                *(self.pool.dial(a) for a in pending), return_exceptions=True
            )
            waiting = []
            for address, result in zip(pending, results, strict=True):
                if result == self.id:
                    ourselves.append(format_address(address))
                elif isinstance(result, str):
                    found.append(result)
                elif isinstance(result, RefusedError) and result.reason == "not_admitted":
                    # A member of a formed cluster that leaves us out: it will never found.
                    raise FoundingError(
                        f"--peers {format_address(address)} refused this node"
                        f" ({result.detail}): it is a member of a formed cluster. To join"
                        " that cluster, start this node with --no-bootstrap and add it with"
                        " `quicraft mgmt add-member`; to found a new one, give --peers only"
                        " nodes that have no cluster yet"
                    )
                else:
                    waiting.append(address)
                    log.info("waiting for founding peer %s (%s)", format_address(address), result)
            pending = waiting
            self._keep_promise(said, frozenset({self.id, *found}), complete=not pending)
            if pending:
                await asyncio.sleep(DIAL_RETRY_S)
        if ourselves and not found and self._refusal is None:
            # Founding {itself} alone is not what --peers asked for: a cluster of one.
            raise FoundingError(
                f"--peers {', '.join(ourselves)} reached this node itself ({self.id}), not "
                "another node: give the other founding nodes' addresses"
            )
        if ourselves:  # among others (the same list given to every node): harmless
            log.info("--peers %s: this node itself; founding with the others", ", ".join(ourselves))
        if self._refusal is not None:
            raise self._refusal
        founders = frozenset({self.id, *found})
        self._keep_promise(said, founders, complete=True)
        self._save_ids(FOUNDERS_KEY, founders)  # before we say it: see _keep_promise
        self._founders = tuple(sorted(founders))
        self.pool.say_hello_again()  # our hellos so far said no set
        while not self._founders_agree(founders):
            self._news.clear()
            try:
                # Not asyncio.wait_for: in Python 3.11 it swallows a cancel (stop()) that
                # comes in the same turn of the loop as the event, and we would wait on.
                async with asyncio.timeout(AGREE_RETRY_S):
                    await self._news.wait()
            except TimeoutError:
                # Say it again: a hello could have gone on a connection that was then replaced.
                self.pool.say_hello_again()
                unsaid = [
                    self._names.get(p, p)
                    for p in sorted(founders - {self.id})
                    if p not in self._said or self._said[p].founders is None
                ]
                log.info(
                    "waiting for founding peers to say their founders: %s (a founder says"
                    " them once it has reached all of its --peers)",
                    ", ".join(unsaid),
                )
        return sorted(founders - {self.id})

    def _keep_promise(
        self, said: frozenset[NodeId], founders: frozenset[NodeId] | None, complete: bool
    ) -> None:
        """Refuse to say a set other than the one this node `said` before it was stopped
        (stored): peers that heard it may still found it with us. `founders`: the set so far,
        all of it once `complete`; None for a node started to join a cluster or to form one
        on a LAN, which would make it a member of another."""
        if not said or (
            founders is not None and (founders == said if complete else founders <= said)
        ):
            return
        instead = (
            "it may not join or form another cluster"
            if founders is None
            else f"its --peers {'make' if complete else 'reach'} {self._listed(founders)}"
        )
        raise FoundingError(
            f"this node told its founding peers that it founds with {self._listed(said)},"
            f" and was stopped before it founded: they may found that set with it still,"
            f" but {instead}. Start it again with --peers making that set; or, to found or"
            " join another cluster,"
            " make sure none of those founded a cluster, stop them, and empty its data"
            f" directory {self.settings.data_dir}"
        )

    def _listed(self, ids: Iterable[NodeId]) -> str:
        """Node names where a hello told them, else where they were reached, else ids."""

        def one(n: NodeId) -> str:
            where = self.pool.addresses.get(n)
            return self._names.get(n) or (f"{n} at {format_address(where)}" if where else n)

        return ", ".join(one(n) for n in sorted(ids))

    def _founders_agree(self, founders: frozenset[NodeId]) -> bool:
        if self._refusal is not None:
            raise self._refusal
        try:
            return founders_agree(self.id, founders, self._said, self._names)
        except NeverFounded:
            # A founder is in a cluster for good: our set can never be founded, so this node
            # may say another when it is started again. Not so for a founder that only says
            # another set: it keeps its word as we keep ours. Were both to forget, each could
            # be started again to say the other's set, and peers still holding what we said
            # would found our old set, with us in it, while we found another.
            self._save_ids(FOUNDERS_KEY, ())
            raise

    def _refuse_to_go_on(self, error: FoundingError) -> None:
        """Stop this node with `error`: start() raises it while starting, else run() ends."""
        if self._run_task is None:
            self._refusal = error
            self._news.set()
        else:
            self.raft.fail(error)

    def _lost_data(self, peer: NodeId) -> bool:
        """Whether `peer`'s hello says this node lost its data: it remembers us as a member,
        and we started with nothing and have not been made a member since. Our log says so:
        founding writes its first entries, and a leader sends entries only to members. (Not
        our membership: once we were removed, it leaves us out too.)"""
        hello, core = self._said[peer], self.raft.core
        return (
            hello.remembers_you
            and self._started_fresh
            and (core is None or core.log.last_index() == 0)
        )

    def _remember(self, m: Message) -> None:
        """Remember a member once it has acted as one: voted, led, or stored entries."""
        acted = m.type in (MessageType.VOTE, MessageType.APPEND) or (
            m.type in (MessageType.VOTE_RESP, MessageType.APPEND_RESP)
            and not m.reject
            and (m.type is MessageType.VOTE_RESP or m.index > 0)
        )
        if acted:
            self._remembered.add(m.frm)
            self._save_ids(REMEMBERED_KEY, self._remembered)

    def _forget_removed(self) -> None:
        """Forget the remembered nodes that are no longer members: they may come back new."""
        core = self.raft.core
        gone = self._remembered - core.membership.members() if core is not None else set()
        if gone:
            self._remembered -= gone
            self._save_ids(REMEMBERED_KEY, self._remembered)

    async def _learn(self, address: Address) -> None:
        while True:
            try:
                await self.pool.dial(address)
                self._save_addresses()
                return
            except TransportError:
                await asyncio.sleep(DIAL_RETRY_S * 4)

    # -- the cluster id --------------------------------------------------------------------

    def cluster_id(self) -> str | None:
        """The id of the formed cluster this node is a member of (None if it has none); kept
        in storage meta as soon as the store knows it."""
        cid = self.kv.cluster_id
        if cid is not None and cid != self._stored_cluster_id:
            self._put_meta(CLUSTER_ID_KEY, cid.encode("ascii"))
            self._stored_cluster_id = cid
        return cid or self._stored_cluster_id

    # -- addresses -------------------------------------------------------------------------

    def address_of(self, node: NodeId) -> str | None:
        if node == self.id:
            host, port = self.advertised
        elif node in self.pool.addresses:
            host, port = self.pool.addresses[node]
        else:
            return None
        return format_address((host, port))

    def _stored_addresses(self) -> dict[NodeId, Address]:
        raw = self.storage.get_meta(ADDRESSES_KEY)
        if raw is None:
            return {}
        try:
            decoded = cbor2.loads(raw)
            return {str(k): (str(v[0]), int(v[1])) for k, v in decoded.items()}
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, cbor2.CBORError):
            log.warning("ignoring unreadable stored peer addresses")
            return {}

    def _stored_ids(self, key: str) -> tuple[NodeId, ...] | None:
        raw = self.storage.get_meta(key)
        if raw is None:
            return None
        try:
            decoded = cbor2.loads(raw)
            if isinstance(decoded, list) and all(isinstance(i, str) for i in decoded):
                return tuple(decoded)
        except (ValueError, cbor2.CBORError):
            pass
        log.warning("ignoring unreadable stored %s", key.replace("_", " "))
        return None

    def _save_ids(self, key: str, ids: Iterable[NodeId]) -> None:
        self._put_meta(key, cbor2.dumps(sorted(ids)))

    def _save_addresses(self) -> None:
        encoded = {k: list(v) for k, v in sorted(self.pool.addresses.items())}
        self._put_meta(ADDRESSES_KEY, cbor2.dumps(encoded))

    def _put_meta(self, key: str, value: bytes) -> None:
        """Store this node's metadata. A write that fails (a full disk) stops the node as a
        failing Raft write does, with one line: the callers are handlers of hellos, requests
        and timers, where the error would end as a logged traceback and the node go on."""
        try:
            self.storage.put_meta(key, value)
        except StorageError as err:
            self.raft.fail(err)

    # -- transport callbacks ---------------------------------------------------------------

    def _admit(self, peer: Peer, alpn: str) -> str | None:
        """Refuse Raft connections from nodes outside the membership (once there is one),
        unless LAN forming runs: then a joiner must be able to say hello (see above)."""
        if alpn != ALPN_RAFT or self.raft.core is None:
            return None
        if not self._heeded(peer.node_id) and self.lan is None:
            return refusal_detail(self._committed_without(peer.node_id))
        return None

    def _committed_without(self, peer: NodeId) -> int | None:
        core = self.raft.core
        if core is None:
            return None
        committed = core.log.committed
        return left_out_at(peer, core.membership, core.log.membership_at(committed), committed)

    def _refused_by(self, peer: NodeId, refusal: RefusedError) -> None:
        self._heard_left_out(peer, committed_without(refusal.detail))

    def _heard_left_out(self, peer: NodeId, index: int | None) -> None:
        """`peer` said that its membership committed as of `index` leaves us out."""
        if index is None:
            return
        core = self.raft.core
        member = bool(core.membership.members()) if core is not None else not self._started_fresh
        self._refused_us.heard(peer, index, while_member=member)
        self._stop_if_removed()

    def _stop_if_removed(self) -> None:
        """Stop once members' refusals and hellos prove that we were removed (removal.py)."""
        core = self.raft.core
        if core is None or self._stopping:
            return
        proof = self._refused_us.removed(core.membership, core.log.membership_index())
        if proof:
            # A name from a hello, else from the replicated address book: a node started
            # again is refused before any member says hello to it.
            names = ", ".join(self._names.get(p) or self.kv.names.get(p) or p for p in proof)
            self.raft.fail(RemovedFromCluster(
                f"this node ({self.settings.name}, {self.id}) was removed from cluster "
                f"{self.settings.cluster!r}: {names} committed a membership without it; "
                f"delete its data directory before starting it again (docs/operations.md)"
            ))  # fmt: skip

    def _heeded(self, peer: NodeId) -> bool:
        """Whether Raft messages from `peer` count: it is a member, or there is no membership
        yet, or a member of ours connected to us names `peer` as its leader (`_named_leader`).
        Our log may be behind the entry that made the leader a member, and only the leader
        can bring it up to date (a member that was down while a node that then took over was
        added)."""
        core = self.raft.core
        if core is None:
            return True
        membership = core.membership
        if peer in membership or not (membership.voters or membership.learners):
            return True
        return self._named_leader(peer) is not None

    def _named_leader(self, leader: NodeId) -> str | None:
        """Where `leader` serves, as a member of ours still connected to us names it as its
        leader in its latest hello; None if none does."""
        core = self.raft.core
        for node, hello in self._said.items():
            if hello.leader_id != leader or core is None or node not in core.membership:
                continue
            if self.pool.connection(node) is not None:
                return hello.leader
        return None

    def _hello(self, peer: NodeId) -> Hello:
        cid = self.cluster_id()
        core = self.raft.core
        formed = cid is not None or (core is not None and bool(core.membership.members()))
        # Where our leader is, for a joiner that dialed us (only a leader adds members).
        leader_id, where = self._our_leader() if formed else (None, None)
        remembers = formed and peer in self._remembered
        lan = self.lan if not formed else None  # what a node deciding on a LAN says
        return Hello(
            format_address(self.advertised), formed, cid, where, self._founders, remembers,
            seen=lan.seeing if lan is not None else None,
            seen_at=lan.seeing_at if lan is not None else None,
            joining=lan is not None and lan.joining,
            awaits=lan.awaits if lan is not None else None,
            leader_id=leader_id,
            committed_without_you=self._committed_without(peer) if formed else None,
        )  # fmt: skip

    def _our_leader(self) -> tuple[NodeId | None, str | None]:
        """The leader our hellos name and where it serves: another node whose address we
        know, else (None, None)."""
        core = self.raft.core
        leader = core.leader if core is not None else None
        where = self.address_of(leader) if leader is not None and leader != self.id else None
        return (leader, where) if where is not None else (None, None)

    def _name_our_leader(self) -> None:
        """Say hello again when the leader our hellos name changed (see _heeded)."""
        leader, _ = self._our_leader()
        if leader != self._leader_said:
            self._leader_said = leader
            self.pool.say_hello_again()

    def _heard_hello(self, peer: NodeId, name: str, address: Address, hello: Hello) -> None:
        self._save_addresses()
        earlier = self._said.get(peer)
        if hello.founders is None and earlier is not None:
            # A peer's set never goes back to unknown: this hello was said before that one.
            hello = dataclasses.replace(hello, founders=earlier.founders)
        self._said[peer], self._names[peer] = hello, name
        self._news.set()
        if self._lost_data(peer):
            self._refuse_to_go_on(
                FoundingError(
                    f"{name} ({peer}) remembers this node as a member of the cluster, but this"
                    f" node's data directory {self.settings.data_dir} was empty: its data was"
                    " lost, and starting as a new node would forget the votes it gave. Remove"
                    f" it (`quicraft mgmt remove-member {self.settings.name}`), then start it"
                    " with --no-bootstrap and add it back (`quicraft mgmt add-member`)"
                )
            )
        self._heard_left_out(peer, hello.committed_without_you)
        if self.lan is not None:
            self.lan.heard_hello(peer, name, address, hello)
        self._name_our_leader()  # we may just have learned where our leader serves
        leader = hello.leader_id
        if leader is not None and leader not in self._meeting and self._where_to_meet(leader):
            task = asyncio.get_running_loop().create_task(self._meet(leader))
            self._meeting[leader] = task
            task.add_done_callback(partial(self._met, leader))

    def _where_to_meet(self, leader: NodeId) -> Address | None:
        """Where to dial `leader`, if we must: a member names it as its leader, we do not
        know it as a member and have no connection to it. It may not know where we serve
        (the address book lists the members its leader has reached)."""
        core = self.raft.core
        if self._stopping or core is None or leader == self.id or leader in core.membership:
            return None
        where = self._named_leader(leader)
        if where is None or self.pool.connection(leader) is not None:
            return None
        try:
            return parse_address(where)
        except ValueError:
            return None

    async def _meet(self, leader: NodeId) -> None:
        """Dial `leader` (who must prove that id) every few seconds, for as long as we must."""
        while (address := self._where_to_meet(leader)) is not None:
            try:
                await self.pool.dial(address, expect=leader)
            except TransportError as err:
                log.debug("cannot reach leader %s at %s: %s", leader, format_address(address), err)
            await asyncio.sleep(DIAL_RETRY_S * 4)

    def _met(self, leader: NodeId, task: asyncio.Task[None]) -> None:
        self._meeting.pop(leader, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("dialing leader %s failed: %r", leader, error)

    def _soft_state(self, soft: SoftState) -> None:
        if self._feed_soft_state is not None:
            self._feed_soft_state(soft)
        self._name_our_leader()

    def _applied(self, entry: Entry) -> None:
        if self._feed_applied is not None:
            self._feed_applied(entry)
        if entry.type is not EntryType.CONF_CHANGE:
            return
        try:
            change = ConfChange.decode(entry.data)
        except (ValueError, KeyError, TypeError):
            return  # changes nothing in the core either (core.types.membership_of)
        if change.kind is not ConfChangeKind.PROMOTE:
            self.kv.membership_changed(change.node, change.kind is ConfChangeKind.REMOVE)
        core = self.raft.core
        if change.kind is not ConfChangeKind.REMOVE or change.node == self.id or core is None:
            return
        # An entry replayed after a restart may be older than the node's return: only what
        # the newest configuration says counts.
        if change.node not in core.membership.members():
            # Admission refuses it new connections; the open one is refused here, saying why.
            detail = refusal_detail(self._committed_without(change.node))
            self.pool.forget(change.node, Refusal("not_admitted", detail))
            self._forget_removed()

    def _snapshot(self, snapshot: Snapshot, installed: bool) -> None:
        if self._feed_snapshot is not None:
            self._feed_snapshot(snapshot, installed)
        if installed:  # it may cover the removal of a member we remember
            self._forget_removed()

    def _on_connection(self, conn: Connection) -> None:
        if conn.alpn == ALPN_RAFT:
            self.pool.adopt(conn)

    def _deliver(self, m: Message, parent: Context | None) -> None:
        core = self.raft.core
        if core is None:
            return
        if not self._heeded(m.frm):
            # Connections we dialed, or accepted while founding, skipped admission.
            log.debug("dropped a message from %s, not a member", m.frm)
            return
        if m.frm not in self._remembered:
            self._remember(m)
        self.raft.receive(m, parent)

    def _unreachable(self, peer: NodeId) -> None:
        if self.raft.core is not None and self.raft.core.role is Role.LEADER:
            self.raft.report_unreachable(peer)

    def _snapshot_sent(self, peer: NodeId, ok: bool) -> None:
        if self.raft.core is not None:
            self.raft.report_snapshot(peer, ok)
