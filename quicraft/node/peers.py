"""Connections to the other members over `quicraft-raft/1`: one per pair, reused, redialed.

Rules of this file:
- One connection per pair of nodes. Either side may dial; when both did, both keep the one
  dialed by the lower node id and close the other, so they agree without talking about it.
- On a connection each side sends on streams it opened itself: a control stream (votes,
  heartbeats, acknowledgements, TimeoutNow, ReadIndex) and a data stream (AppendEntries), so
  heartbeats and votes never wait behind bulk appends; every snapshot streams in chunks on a
  stream of its own.
- Raft tolerates lost messages, so nothing here retries one: while a peer is unreachable its
  messages are dropped, the core is told (`on_unreachable`) and the link redials with backoff.
- But every snapshot message given to `send` of an open pool ends in exactly one
  `on_snapshot_sent` report, dropped ones included: until it comes, the leader's core sends
  that follower nothing more, so a snapshot dropped unreported would strand it for good.
- A message is believed only if its sender is the authenticated peer of its connection.
- A member that refuses us, at a dial that expected its id or by closing our connection as a
  refusal, is reported (`on_refused`): node/removal.py decides from such reports whether this
  node was removed from the cluster.
- Hello: each side of every connection it adopts opens one more stream and writes one hello
  frame on it (wire/hello.py: the address it serves on, whether it is formed, its cluster id,
  and where its leader serves when that is another node).
  A stream's first frame is told apart by its keys: "hello" is a hello (and the stream carries
  nothing else), else a Raft message, else a snapshot header. The address is only where to
  dial the peer; who it is stays the key of the connection. It is recorded for an accepted
  connection (the only way to learn where to dial a node that dialed us) and for a peer with
  no address yet; a dialed connection's address already proved to work and is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import StatusCode

from quicraft.core import Message, MessageType, NodeId
from quicraft.telemetry import NO_METRICS, NO_TRACING, Readings, remote_parent, traceparent
from quicraft.transport import (
    ALPN_RAFT,
    Connection,
    Identity,
    Refusal,
    RefusedError,
    Stream,
    TransportError,
    connect,
)
from quicraft.transport.address import Address, is_unspecified, parse_address
from quicraft.wire import (
    Hello,
    ProtocolError,
    SnapshotAssembler,
    decode_envelope,
    encode_hello,
    encode_message,
    peek_hello,
    snapshot_frames,
)

log = logging.getLogger("quicraft.peers")


SNAPSHOT_CHUNK = 256 * 1024
#: Messages waiting for one peer; beyond this the oldest are dropped (Raft resends).
QUEUE_LIMIT = 10_000
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.05, 2.0
DUPLICATE_GRACE_S = 2.0
#: A connection that carried nothing for this long gives way to a new one from the same peer.
SILENT_S = 1.0
#: The longest close() waits for a dialed connection to end; its UDP socket is freed then.
CLOSE_WAIT_S = 1.0


class PeerPool:
    def __init__(
        self,
        identity: Identity,
        deliver: Callable[[Message, Context | None], None],
        on_unreachable: Callable[[NodeId], None],
        on_snapshot_sent: Callable[[NodeId, bool], None],
    ):
        self.identity = identity
        self.id = identity.node_id
        self._deliver = deliver
        self._on_unreachable = on_unreachable
        self._on_snapshot_sent = on_snapshot_sent
        #: Where to dial each member: a hint learned from --peers or from its connections.
        self.addresses: dict[NodeId, Address] = {}
        self._connections: dict[NodeId, Connection] = {}
        #: Every connection adopted and not over yet: duplicates and replaced ones included.
        self._adopted: set[Connection] = set()
        self._heard: dict[NodeId, float] = {}  # when the current connection last carried a frame
        self._links: dict[NodeId, _Link] = {}
        self._closed = False
        #: What this node says in its hello to a peer (None: say nothing), and who hears
        #: theirs: the authenticated peer, where to dial it, and what it said.
        self.hello: Callable[[NodeId], Hello] | None = None
        #: (id, name from its certificate, address, hello) of each peer that says hello.
        self.on_hello: Callable[[NodeId, str, Address, Hello], None] | None = None
        #: (id, what it said) of each member that refuses us, at a dial or by closing.
        self.on_refused: Callable[[NodeId, RefusedError], None] | None = None
        # In flight, kept so they are not lost: hellos being written, connections watched.
        self._tasks: set[asyncio.Task[None]] = set()
        self.tracing, self.metrics = NO_TRACING, NO_METRICS

    # -- sending ---------------------------------------------------------------------------

    def send(self, m: Message, tp: str | None = None) -> None:
        """Send `m` (with trace context `tp`) if its peer can be reached."""
        if self._closed:
            return
        link = self._links.get(m.to)
        if link is None:
            link = self._links[m.to] = _Link(self, m.to)
        link.enqueue(m, tp)

    # -- connections -----------------------------------------------------------------------

    def round_trip_times(self) -> Readings:
        """Each connected peer's smoothed round-trip time, for the metrics (any thread)."""
        for peer, conn in list(self._connections.items()):
            rtt = conn.rtt
            if rtt is not None and not conn.closed:
                yield rtt, {"peer": peer}

    def connection(self, peer: NodeId) -> Connection | None:
        conn = self._connections.get(peer)
        return conn if conn is not None and not conn.closed else None

    def adopt(self, conn: Connection) -> None:
        """Take a new authenticated connection (dialed or accepted) to a peer."""
        peer = conn.peer.node_id
        current = self.connection(peer)
        if current is not conn:
            self._adopted.add(conn)
            self._keep(self._watch(conn))
            self._say_hello(conn)
        if current is None or current is conn or self._silent(peer):
            # A silent current connection is most likely to a process that has since
            # restarted (QUIC only notices at the idle timeout): the new one replaces it.
            if current is not None and current is not conn:
                current.close("replaced by a newer connection")
            self._connections[peer] = conn
            self._heard[peer] = time.monotonic()
        else:
            keep, drop = (conn, current) if self._preferred(conn) else (current, conn)
            self._connections[peer] = keep
            # Close the loser a little later: its dialer may still be learning who we are.
            loop = asyncio.get_running_loop()
            loop.call_later(DUPLICATE_GRACE_S, drop.close, "duplicate connection")
            if keep is current:
                return
        log.debug("connected to %s (%s)", peer, "dialed" if conn.dialed else "accepted")
        link = self._links.get(peer)
        if link is not None:
            link.wake()

    def forget(self, peer: NodeId, refusal: Refusal) -> None:
        """`peer` was removed from the cluster: refuse its connection, send it nothing more."""
        conn = self._connections.pop(peer, None)
        if conn is not None:
            conn.refuse(refusal)
        link = self._links.pop(peer, None)
        if link is not None:
            link.stop()

    def _silent(self, peer: NodeId) -> bool:
        return not self.heard_within(peer, SILENT_S)

    def heard_within(self, peer: NodeId, seconds: float) -> bool:
        """Whether `peer`'s current connection was made or carried a frame in the last
        `seconds`: a node without a leader counts the voters it can reach with this."""
        return time.monotonic() - self._heard.get(peer, 0.0) <= seconds

    def _preferred(self, conn: Connection) -> bool:
        dialer = self.id if conn.dialed else conn.peer.node_id
        return dialer == min(self.id, conn.peer.node_id)

    async def dial(self, address: Address, expect: NodeId | None = None) -> NodeId:
        """Connect to `address` and return the id of the node found there (for bootstrap)."""
        try:
            conn = await connect(
                address[0],
                address[1],
                self.identity,
                ALPN_RAFT,
                expect_node_id=expect,
                handlers={ALPN_RAFT: self.handle_stream},
            )
        except RefusedError as err:
            # Only a refusal after the handshake's checks (the server proved its key) counts.
            if expect is not None and err.reason == "not_admitted":
                self._refused(expect, err)
            raise
        peer = conn.peer.node_id
        self.addresses[peer] = address
        self.adopt(conn)
        return peer

    def say_hello_again(self) -> None:
        """Say hello once more on every connection: what this node says has changed."""
        for conn in list(self._connections.values()):
            if not conn.closed:
                self._say_hello(conn)

    def _say_hello(self, conn: Connection) -> None:
        if self.hello is None or self._closed:
            return
        self._keep(self._write_hello(conn, self.hello(conn.peer.node_id)))

    def _keep(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, conn: Connection) -> None:
        await conn.wait_closed()
        self._adopted.discard(conn)
        if isinstance(conn.failure, RefusedError):
            self._refused(conn.peer.node_id, conn.failure)

    def _refused(self, peer: NodeId, err: RefusedError) -> None:
        if self.on_refused is not None and not self._closed:
            self.on_refused(peer, err)

    async def _write_hello(self, conn: Connection, hello: Hello) -> None:
        try:
            stream = await conn.open_stream()
            stream.write_frame(encode_hello(hello))
            stream.end()
            await stream.drain()
        except (TransportError, ConnectionError, ProtocolError) as err:
            log.debug("no hello to %s: %s", conn.peer.node_id, err)

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for link in self._links.values():
            link.stop()
        adopted, self._adopted = list(self._adopted), set()
        for conn in adopted:
            conn.close("node stopping")
        self._connections.clear()
        # A dialed connection has a UDP socket of its own, which must not outlive the node
        # (nor the event loop, when the program ends right after stop()).
        await asyncio.gather(*(c.wait_closed(CLOSE_WAIT_S) for c in adopted if c.dialed))

    # -- receiving -------------------------------------------------------------------------

    async def handle_stream(self, conn: Connection, stream: Stream) -> None:
        """Read Raft messages from a stream the peer opened, until it ends."""
        peer = conn.peer.node_id
        try:
            frame = await stream.read_frame()
            if frame is None:
                return
            hello = peek_hello(frame)
            if hello is not None:
                self._heard_hello(conn, hello)
                return
            try:
                m, parent = self._decode(frame)
            except ProtocolError:
                # The first frame of a snapshot's own stream is its header, not a message.
                m, parent = await self._receive_snapshot(SnapshotAssembler(frame), stream)
            while True:
                if m.frm != peer or m.to != self.id:
                    log.warning("dropped a message from %s claiming to be %s", peer, m.frm)
                    return
                if self._connections.get(peer) is conn:
                    self._heard[peer] = time.monotonic()
                self._deliver(m, parent)
                frame = await stream.read_frame()
                if frame is None:
                    return
                m, parent = self._decode(frame)
        except ProtocolError as err:
            log.warning("protocol error from %s: %s", peer, err)
            conn.close(f"protocol error: {err}")
        except TransportError:
            return

    def _decode(self, frame: bytes) -> tuple[Message, Context | None]:
        """A Raft message and, when traced, the trace context it came with."""
        envelope = decode_envelope(frame)
        tp = envelope.traceparent
        return envelope.message, remote_parent(tp) if tp and self.tracing.on else None

    def _heard_hello(self, conn: Connection, hello: Hello) -> None:
        peer = conn.peer.node_id
        if peer == self.id or self._closed:
            return
        try:
            host, port = parse_address(hello.address)
        except ValueError:
            raise ProtocolError(f"hello: bad address {hello.address!r}") from None
        if is_unspecified(host):
            host = conn.peer.address[0]  # it serves on every interface: dial the one it used
        address = (host, port)
        if not conn.dialed or peer not in self.addresses:
            self.addresses[peer] = address
        log.debug("hello from %s at %s: %s", peer, hello.address, hello)
        if self.on_hello is not None:
            self.on_hello(peer, conn.peer.name, self.addresses.get(peer, address), hello)

    async def _receive_snapshot(
        self, assembler: SnapshotAssembler, stream: Stream
    ) -> tuple[Message, Context | None]:
        """The snapshot message, and the trace context its installation belongs to."""
        span = self.tracing.span("raft.snapshot.receive", remote_parent(assembler.traceparent))
        try:
            while not assembler.complete:
                chunk = await stream.read_frame()
                if chunk is None:
                    raise ProtocolError(f"snapshot stream ended after {assembler.received} bytes")
                assembler.feed(chunk)
            m = assembler.message()
        finally:
            span.set_attribute("raft.bytes", assembler.received)
            span.end()
        log.info("received a snapshot of %d bytes from %s", assembler.size, m.frm)
        self.metrics.snapshots.add(1, {"kind": "received"})
        self.metrics.snapshot_bytes.add(assembler.size, {"kind": "received"})
        return m, trace.set_span_in_context(span) if self.tracing.on else None


class _Link:
    """The sending half of one peer: a queue and a task that keeps a connection to drain it."""

    def __init__(self, pool: PeerPool, peer: NodeId):
        self.pool = pool
        self.peer = peer
        self.queue: deque[tuple[Message, str | None]] = deque()  # at most QUEUE_LIMIT
        #: The (control, data) streams while a connection is up: enqueue() writes on them
        #: at once rather than waking the task, which would cost a turn of the loop.
        self._streams: tuple[Stream, Stream] | None = None
        self._ready = asyncio.Event()
        self._snapshots: set[asyncio.Task[bool]] = set()  # in flight; kept so they are not lost
        self._task = asyncio.create_task(self._run(), name=f"link-{peer}")

    def enqueue(self, m: Message, tp: str | None) -> None:
        streams = self._streams
        if streams is not None and not self.queue and m.type is not MessageType.SNAPSHOT:
            try:
                _write(streams, m, tp)
                return
            except TransportError:
                self._streams = None  # the task notices the connection's end and redials
        if len(self.queue) >= QUEUE_LIMIT:
            self._drop(self.queue.popleft()[0])
        self.queue.append((m, tp))
        self._ready.set()

    def _drop(self, m: Message) -> None:
        if m.type is MessageType.SNAPSHOT:
            self.pool._on_snapshot_sent(self.peer, False)

    def _drop_queue(self) -> None:
        while self.queue:
            self._drop(self.queue.popleft()[0])

    def wake(self) -> None:
        self._ready.set()

    def stop(self) -> None:
        self._task.cancel()
        self._drop_queue()
        for task in self._snapshots:
            task.cancel()

    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            await self._ready.wait()
            self._ready.clear()
            conn = self.pool.connection(self.peer)
            if conn is None:
                conn = await self._dial()
                if conn is None:
                    self._drop_queue()
                    self.pool._on_unreachable(self.peer)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
            backoff = BACKOFF_MIN_S
            try:
                await self._send_on(conn)
            except (TransportError, ConnectionError) as err:
                log.info("lost connection to %s: %s", self.peer, err)
                conn.close("send failed")
                self.pool._on_unreachable(self.peer)

    async def _dial(self) -> Connection | None:
        address = self.pool.addresses.get(self.peer)
        if address is None:
            return None  # only the peer can reach us; wait for it to dial
        try:
            await self.pool.dial(address, expect=self.peer)
        except TransportError as err:
            log.debug("cannot reach %s at %s:%d: %s", self.peer, *address, err)
            return None
        return self.pool.connection(self.peer)

    async def _send_on(self, conn: Connection) -> None:
        """Write queued messages on this connection's streams until it is replaced or closed."""
        streams = (await conn.open_stream(), await conn.open_stream())
        try:
            while self.pool.connection(self.peer) is conn:
                while self.queue:
                    m, tp = self.queue.popleft()
                    if m.type is MessageType.SNAPSHOT:
                        task = asyncio.create_task(self._send_snapshot(conn, m))
                        self._snapshots.add(task)
                        # A callback, not the coroutine's `finally`: it runs even for a task
                        # cancelled before it started (stop()).
                        task.add_done_callback(self._snapshot_done)
                        continue
                    _write(streams, m, tp)
                self._streams = streams
                await self._ready.wait()
                self._ready.clear()
                self._streams = None
        finally:
            self._streams = None
        self._ready.set()  # go round again with the new connection

    def _snapshot_done(self, task: asyncio.Task[bool]) -> None:
        self._snapshots.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.warning("sending a snapshot to %s failed: %r", self.peer, error)
        sent = not task.cancelled() and error is None and task.result()
        self.pool._on_snapshot_sent(self.peer, sent)

    async def _send_snapshot(self, conn: Connection, m: Message) -> bool:
        """Whether the snapshot went out whole."""
        assert m.snapshot is not None
        pool = self.pool
        span = pool.tracing.span(
            "raft.snapshot.send",
            attributes={"raft.peer": self.peer, "raft.index": m.snapshot.meta.index},
        )
        ok = False
        try:
            stream = await conn.open_stream()
            frames = snapshot_frames(m, traceparent=traceparent(span), chunk_size=SNAPSHOT_CHUNK)
            for frame in frames:
                stream.write_frame(frame)
                await stream.drain()  # flow control: never buffer the whole snapshot
            stream.end()
            await stream.drain()
            ok = True
            log.info("sent a snapshot at index %d to %s", m.snapshot.meta.index, self.peer)
            pool.metrics.snapshots.add(1, {"kind": "sent"})
            pool.metrics.snapshot_bytes.add(len(m.snapshot.data), {"kind": "sent"})
        except (TransportError, ConnectionError) as err:
            log.info("snapshot to %s failed: %s", self.peer, err)
            span.set_status(StatusCode.ERROR, str(err))
        finally:
            span.end()
        return ok


def _write(streams: tuple[Stream, Stream], m: Message, tp: str | None) -> None:
    """Appends go on the data stream, everything else on the control stream."""
    control, data = streams
    stream = data if m.type is MessageType.APPEND else control
    stream.write_frame(encode_message(m, traceparent=tp))
