"""The aioquic internals we rely on: if an aioquic upgrade moves them, these tests fail loudly.

The handshakes here run two aioquic connections against each other in memory, with no sockets.
"""

from __future__ import annotations

import ast
import inspect
import ssl
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # public, but not re-exported
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
from aioquic.tls import Epoch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transport_helpers import Certs, run

from quicraft.transport import ALPN_RAFT, Identity, connection
from quicraft.transport import _aioquic_private as private

CLIENT_ADDR = ("10.0.0.2", 4433)
SERVER_ADDR = ("10.0.0.1", 7400)


def test_the_private_attributes_are_still_there() -> None:
    private.check()  # raises RuntimeError naming what is missing


def test_delay_acks_sets_a_delay_within_the_announced_maximum() -> None:
    quic = QuicConnection(configuration=QuicConfiguration(is_client=True))
    private.delay_acks(quic)
    assert quic._ack_delay == private.ACK_DELAY_S
    assert private.ACK_DELAY_S * 1000 < 25  # within the max_ack_delay we announce


@dataclass
class _Reader:
    """A ReadCredit (_aioquic_private, 11.) for one end of a pair: what arrived on each stream,
    and how much of it the application read; every byte counts as a whole frame."""

    stream_window: int = 16 * 1024  # small: writes of up to 40,000 bytes must wait for it
    connection_window: int = 32 * 1024
    arrived: dict[int, int] = field(default_factory=dict)
    read: dict[int, int] = field(default_factory=dict)

    def taken(self, stream_id: int) -> int | None:
        return self.read.get(stream_id)

    def waiting(self) -> int:
        return sum(got - self.read[i] for i, got in self.arrived.items())

    def got(self, stream_id: int, size: int) -> None:
        self.arrived[stream_id] = self.arrived.get(stream_id, 0) + size
        self.read.setdefault(stream_id, 0)

    def take(self, share: int) -> None:
        """Read `share` percent of what waits on every stream."""
        for i, got in self.arrived.items():
            self.read[i] += (got - self.read[i]) * share // 100


def handshake(
    server_id: Identity, client_id: Identity, *, ask: bool, paced: bool = False
) -> tuple[QuicConnection, QuicConnection]:
    """A client and a server connection after their handshake; `paced`: both grant credit
    by what a _Reader of theirs read."""
    windows = {}
    if paced:
        reader = _Reader()
        windows = {"max_stream_data": reader.stream_window, "max_data": reader.connection_window}
    kind = private.ReadPacedQuicConnection if paced else QuicConnection
    client = kind(
        configuration=QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN_RAFT],
            certificate=client_id.certificate(),
            private_key=client_id.private_key(),
            cadata=client_id.ca_pem,
            verify_mode=ssl.CERT_REQUIRED,
            **windows,  # type: ignore[arg-type]
        )
    )
    now = 1.0
    client.connect(SERVER_ADDR, now=now)
    first = client.datagrams_to_send(now=now)
    header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8)
    server = QuicConnection(
        configuration=QuicConfiguration(
            is_client=False,
            alpn_protocols=[ALPN_RAFT],
            certificate=server_id.certificate(),
            private_key=server_id.private_key(),
            **windows,  # type: ignore[arg-type]
        ),
        original_destination_connection_id=header.destination_cid,
    )
    if ask or paced:
        private.request_client_certificate(server)  # a server's paced connection is this one
    if paced:
        private.pace_by_reading(client, _Reader())
        private.pace_by_reading(server, _Reader())
    pending = first
    for _ in range(10):
        for data, _addr in pending:
            server.receive_datagram(data, CLIENT_ADDR, now=now)
        back = server.datagrams_to_send(now=now)
        for data, _addr in back:
            client.receive_datagram(data, SERVER_ADDR, now=now)
        pending = client.datagrams_to_send(now=now)
        now += 0.01
        if not pending and not back:
            break
    return client, server


def test_the_server_asks_for_and_gets_the_client_certificate(certs: Certs) -> None:
    n1, n2 = certs.load("n1"), certs.load("n2")
    client, server = handshake(n1, n2, ask=True)
    got = private.peer_certificate(server)
    assert got is not None and got == n2.certificate()
    assert private.peer_certificate(client) == n1.certificate()
    assert type(server).__name__ == "_ClientCertQuicConnection"


def test_without_the_hook_aioquic_asks_for_nothing(certs: Certs) -> None:
    # the reason the hook exists: plain aioquic servers never see a client certificate
    _, server = handshake(certs.load("n1"), certs.load("n2"), ask=False)
    assert private.peer_certificate(server) is None


def test_the_hook_only_takes_fresh_server_connections(certs: Certs) -> None:
    client = QuicConnection(configuration=QuicConfiguration(is_client=True))
    with pytest.raises(TypeError):
        private.request_client_certificate(client)


def test_unacked_bytes_follows_a_stream(certs: Certs) -> None:
    client, _server = handshake(certs.load("n1"), certs.load("n2"), ask=True)
    stream_id = client.get_next_available_stream_id()
    assert private.unacked_bytes(client, stream_id) == 0
    client.send_stream_data(stream_id, b"x" * 5000)
    assert private.unacked_bytes(client, stream_id) == 5000


@pytest.mark.parametrize("ride_along", [False, True])
def test_an_owed_ack_rides_with_data_only_when_asked(certs: Certs, ride_along: bool) -> None:
    client, server = handshake(certs.load("n1"), certs.load("n2"), ask=True)
    for quic in (client, server):
        private.delay_acks(quic)
    now = 2.0
    stream_id = client.get_next_available_stream_id()
    client.send_stream_data(stream_id, b"request")
    for data, _addr in client.datagrams_to_send(now=now):
        server.receive_datagram(data, CLIENT_ADDR, now=now)
    assert client._loss.bytes_in_flight > 0  # the server owes an acknowledgement

    now += 0.001  # well inside the ACK delay: aioquic alone would keep the ACK back
    server.send_stream_data(stream_id, b"answer")
    if ride_along:
        private.acknowledge_with_data(server, now)
    answer = server.datagrams_to_send(now=now)
    assert len(answer) == 1
    client.receive_datagram(answer[0][0], SERVER_ADDR, now=now)
    acknowledged = client._loss.bytes_in_flight == 0
    assert acknowledged is ride_along


def test_an_ack_is_due_at_once_when_a_second_packet_waits_for_one(certs: Certs) -> None:
    """One ack-eliciting packet waits up to ACK_DELAY_S, for data to ride with; a second
    makes the acknowledgement due (RFC 9000 section 13.2.2), so that a bulk sender (a
    snapshot) is acknowledged every other packet and its window keeps growing."""
    client, server = handshake(certs.load("n1"), certs.load("n2"), ask=True)
    private.delay_acks(server)
    now = 2.0
    stream_id = client.get_next_available_stream_id()
    space = server._spaces[Epoch.ONE_RTT]

    def one_packet(data: bytes) -> None:
        client.send_stream_data(stream_id, data)
        for datagram, _addr in client.datagrams_to_send(now=now):
            private.receive_acking_every_second(server, datagram, CLIENT_ADDR, now)

    one_packet(b"first")
    assert space.ack_at == pytest.approx(now + private.ACK_DELAY_S)
    assert private.nothing_to_send(server, now)  # it waits
    now += 0.001
    one_packet(b"second")
    assert space.ack_at == now and not private.nothing_to_send(server, now)
    for datagram, _addr in server.datagrams_to_send(now=now):
        client.receive_datagram(datagram, SERVER_ADDR, now=now)
    assert client._loss.bytes_in_flight == 0  # both acknowledged
    assert space.ack_at is None
    now += 0.001
    one_packet(b"third")  # the count starts again
    assert space.ack_at == pytest.approx(now + private.ACK_DELAY_S)


def test_our_protocol_does_not_shadow_aioquic_private_names() -> None:
    """PeerProtocol subclasses QuicConnectionProtocol; reusing one of its private names (say
    `_loop` or `_closed`) would silently break aioquic, so every name we add must be new."""

    async def parent_attributes() -> set[str]:
        quic = QuicConnection(configuration=QuicConfiguration(is_client=True))
        return set(vars(QuicConnectionProtocol(quic)))

    theirs = run(parent_attributes()) | {
        n for n in vars(QuicConnectionProtocol) if n.startswith("_")
    }
    tree = ast.parse(inspect.getsource(connection))
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PeerProtocol"]
    assigned = {
        node.attr
        for node in ast.walk(cls)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and isinstance(node.ctx, ast.Store)
    }
    methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    private_methods = {m for m in methods if m.startswith("_") and not m.startswith("__")}
    assert "_q" in assigned and "_on_handshake" in private_methods  # the scan sees our names
    assert not assigned & theirs
    assert not private_methods & theirs


# -- nothing_to_send / skip_transmit ------------------------------------------------------------


@dataclass
class _Timer:
    when: float

    def cancel(self) -> None:
        pass


@dataclass
class _Loop:
    """What skip_transmit asks of the event loop: call_at, recorded instead of scheduled."""

    armed: list[float] = field(default_factory=list)

    def call_at(self, when: float, callback: object) -> _Timer:
        self.armed.append(when)
        return _Timer(when)


@dataclass
class _Protocol:
    """The attributes of aioquic's QuicConnectionProtocol that skip_transmit touches."""

    _quic: QuicConnection
    _loop: _Loop = field(default_factory=_Loop)
    _transmit_task: object = None
    _timer: _Timer | None = None
    _timer_at: float | None = None

    def _handle_timer(self) -> None:
        pass


class _Pair:
    """Two connected aioquic connections in memory with the datagrams in flight between them;
    each end transmits with `private.transmit`, as PeerProtocol.transmit does, and every
    transmit it skips is checked: aioquic would have sent nothing. A timer due at once fires at
    once, as the event loop would fire it; one still due after that would spin the loop."""

    def __init__(self, client: QuicConnection, server: QuicConnection) -> None:
        self.ends = (client, server)
        self.protocols = (_Protocol(client), _Protocol(server))
        self.source = (SERVER_ADDR, CLIENT_ADDR)  # where each end's datagrams come from
        self.in_flight: tuple[list[bytes], list[bytes]] = ([], [])  # sent by end i
        self.streams: tuple[list[int], list[int]] = ([], [])  # ids end i may write on
        self.wrote = [False, False]
        self.now = 2.0
        self.skipped = 0
        self.aborted: set[int] = set()  # reset or stopped, by either end
        for quic in self.ends:
            private.delay_acks(quic)

    def transmit(self, i: int) -> None:
        quic = self.ends[i]
        skips = not self.wrote[i] and private.nothing_to_send(quic, self.now)
        if skips:  # checked before the skip, as aioquic would have built packets then
            pacing = quic._pacing_at  # datagrams_to_send changes it: the skip must not rely on that
            assert quic.datagrams_to_send(now=self.now) == [], "a skipped transmit had data"
            quic._pacing_at = pacing
        built: list[bool] = []

        def build() -> None:
            built.append(True)
            self.in_flight[i].extend(data for data, _ in quic.datagrams_to_send(now=self.now))

        private.transmit(cast(Any, self.protocols[i]), self.wrote[i], self.now, build)
        assert bool(built) is not skips, "built packets where it should skip, or the reverse"
        if skips:
            self.skipped += 1
            assert self.protocols[i]._timer_at == quic.get_timer()
            return
        self.wrote[i] = False

    def fire_timers(self) -> None:
        """Each end's timer, if due, fires as QuicConnectionProtocol._handle_timer does; the
        clock moves on by 10 us a firing (pacing may wait that long with an ACK due)."""
        for i, quic in enumerate(self.ends):
            for _ in range(100):
                timer = quic.get_timer()
                if timer is None or timer > self.now:
                    break
                self.now += 0.000_01
                quic.handle_timer(now=self.now)
                while quic.next_event() is not None:
                    pass
                self.transmit(i)
            else:
                raise AssertionError(f"end {i}'s timer stays due at {self.now}: it would spin")

    def deliver(self, i: int, keep: int) -> None:
        """End i's datagrams reach the other end, except every `keep`-th is lost (0: none)."""
        sent, self.in_flight[i][:] = list(self.in_flight[i]), []
        other = self.ends[1 - i]
        for number, data in enumerate(sent, 1):
            if keep and number % keep == 0:
                continue
            other.receive_datagram(data, self.source[1 - i], now=self.now)
        reader = self.reader(1 - i)
        while (event := other.next_event()) is not None:
            if reader is not None and isinstance(event, events.StreamDataReceived):
                reader.got(event.stream_id, len(event.data))
            seen = self.streams[1 - i]
            if isinstance(event, events.StreamDataReceived) and event.stream_id not in seen:
                seen.append(event.stream_id)
            if isinstance(event, events.StreamDataReceived) and event.end_stream:
                self.answer(1 - i, event.stream_id)
        self.transmit(1 - i)

    def reader(self, i: int) -> _Reader | None:
        credit = getattr(self.ends[i], "read_credit", None)
        return credit if isinstance(credit, _Reader) else None

    def take(self, i: int, share: int) -> None:
        """End i's application reads, and the link transmits as a reader's take asks."""
        reader = self.reader(i)
        if reader is not None:
            reader.take(share)
            self.transmit(i)

    def answer(self, i: int, stream_id: int) -> None:
        """A request ended: answer and end the stream too, so that it finishes and is
        discarded, and the peer may open another (MAX_STREAMS)."""
        try:
            self.ends[i].send_stream_data(stream_id, b"answer", end_stream=True)
        except (ValueError, RuntimeError, AssertionError):
            return  # we ended or reset it already
        self.wrote[i] = True

    def requests(self, i: int, count: int) -> None:
        """`count` new streams, each a whole request."""
        quic = self.ends[i]
        for _ in range(count):
            quic.send_stream_data(quic.get_next_available_stream_id(), b"ask", end_stream=True)
        self.wrote[i] = True

    def write(self, i: int, size: int, end: bool) -> None:
        quic = self.ends[i]
        if not self.streams[i] or size % 3 == 0:
            self.streams[i].append(quic.get_next_available_stream_id())
        stream_id = self.streams[i][size % len(self.streams[i])]
        try:
            quic.send_stream_data(stream_id, b"w" * size, end_stream=end)
        except (ValueError, RuntimeError, AssertionError):
            return  # finished or reset: StreamTable refuses these too
        self.wrote[i] = True

    def abort(self, i: int, which: int) -> None:
        if not self.streams[i]:
            return
        stream_id = self.streams[i][which % len(self.streams[i])]
        self.aborted.add(stream_id)
        try:
            if which % 2:
                self.ends[i].reset_stream(stream_id, 1)
            else:
                self.ends[i].stop_stream(stream_id, 1)
        except ValueError:
            pass
        self.transmit(i)


_STEPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "write",
                "write_end",
                "requests",
                "transmit",
                "deliver",
                "lose",
                "wait",
                "ping",
                "abort",
                "take",
            ]
        ),
        st.integers(0, 1),
        st.integers(0, 40_000),
    ),
    max_size=40,
)


# 1,500 examples were run by hand when this was written; CI runs fewer.
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_STEPS, paced=st.booleans())
def test_a_skipped_transmit_would_have_sent_nothing(
    certs: Certs, steps: list[tuple[str, int, int]], paced: bool
) -> None:
    """Paced: credit granted by reading (11.), with readers that lag behind."""
    client, server = handshake(certs.load("n1"), certs.load("n2"), ask=True, paced=paced)
    pair = _Pair(client, server)
    for kind, i, number in steps:
        if kind in ("write", "write_end"):
            pair.write(i, number, end=kind == "write_end")
        elif kind == "requests":
            pair.requests(i, 1 + number % 64)
        elif kind == "transmit":
            pair.transmit(i)
        elif kind in ("deliver", "lose"):
            pair.deliver(i, keep=2 + number % 3 if kind == "lose" else 0)
        elif kind == "wait":
            pair.now += number / 100_000  # up to 0.4 s: past ACK delays and loss timers
        elif kind == "take":
            pair.take(i, number % 101)
        elif kind == "ping":
            pair.ends[i].send_ping(number)
            pair.transmit(i)
        else:
            pair.abort(i, number)
        pair.fire_timers()
    for _ in range(50):  # settle: every timer fires, every datagram arrives and is read
        pair.take(0, 100)
        pair.take(1, 100)
        pair.transmit(0)
        pair.transmit(1)
        pair.deliver(0, keep=0)
        pair.deliver(1, keep=0)
        pair.now += 0.05
        pair.fire_timers()
    for quic in pair.ends:  # credit came as the readers read: everything written got across
        stuck = {i: private.unacked_bytes(quic, i) for i in quic._streams if i not in pair.aborted}
        assert not any(stuck.values()), stuck


def test_bytes_held_after_a_gap_count_against_the_connection_window(certs: Certs) -> None:
    """What aioquic holds after a lost datagram, on a stream that delivered nothing yet (so
    its reader never heard of it), is unread too: it was counted as read, and credit granted
    for it (found by a review)."""
    client, server = handshake(certs.load("n1"), certs.load("n2"), ask=True, paced=True)
    pair = _Pair(client, server)
    reader = pair.reader(1)
    assert reader is not None
    stream_id = client.get_next_available_stream_id()
    client.send_stream_data(stream_id, b"a" * 1000)
    pair.transmit(0)
    lost, pair.in_flight[0][:] = list(pair.in_flight[0]), []
    client.send_stream_data(stream_id, b"b" * 2000)
    pair.transmit(0)
    pair.deliver(0, keep=0)  # all but the first datagram: a gap of 1,000 bytes, then more
    held = server._streams[stream_id].receiver.highest_offset
    assert lost and reader.arrived == {} and held > 1000  # nothing reached the reader
    # A window twice what is held: all of it read would be half a window, and granted.
    reader.connection_window = server._local_max_data.value = 2 * held
    assert private.connection_credit(server, reader) is None
    for data in lost:  # the gap filled: the reader gets it all, takes it, and is granted
        server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    while (event := server.next_event()) is not None:
        if isinstance(event, events.StreamDataReceived):
            reader.got(event.stream_id, len(event.data))
    reader.take(100)
    assert private.connection_credit(server, reader) == 3 * held


def test_a_request_waiting_for_its_answer_needs_no_transmit(certs: Certs) -> None:
    """The common case the skip is for: the server got a request, holds the ACK (delayed) and
    has not answered yet; the client's data is all sent. Neither end has anything to send."""
    client, server = handshake(certs.load("n1"), certs.load("n2"), ask=True)
    pair = _Pair(client, server)
    pair.write(0, 300, end=False)
    pair.transmit(0)
    pair.deliver(0, keep=0)  # the server transmits after receiving: the delayed ACK waits
    assert pair.skipped == 1
    assert private.nothing_to_send(client, pair.now)
    pair.now += private.ACK_DELAY_S
    assert not private.nothing_to_send(server, pair.now)  # now the ACK is due


def test_a_skipped_transmit_arms_the_timer_for_the_delayed_ack(certs: Certs) -> None:
    client, server = handshake(certs.load("n1"), certs.load("n2"), ask=True)
    pair = _Pair(client, server)
    pair.write(0, 300, end=False)
    pair.transmit(0)
    pair.deliver(0, keep=0)
    assert pair.skipped == 1
    protocol = pair.protocols[1]
    assert protocol._loop.armed == [server.get_timer()]
    assert protocol._timer_at == pytest.approx(pair.now + private.ACK_DELAY_S)


def test_a_skipped_transmit_forgets_a_pacing_time(certs: Certs) -> None:
    """datagrams_to_send forgets the pacing time before anything else; a skip that kept one
    already past would arm the timer for the past again after every firing."""
    client, _server = handshake(certs.load("n1"), certs.load("n2"), ask=True)
    protocol = _Protocol(client)
    now = 3.0
    client._pacing_at = now - 0.001
    assert private.nothing_to_send(client, now)
    private.skip_transmit(cast(Any, protocol))
    assert client._pacing_at is None
    assert protocol._timer_at == client.get_timer() and protocol._timer_at > now


def test_streams_opened_and_finished_in_bulk_get_more_streams(certs: Certs) -> None:
    """Hundreds of whole request streams: the server discards the finished ones and must
    announce more (MAX_STREAMS, which aioquic batches) with no transmit of it skipped."""
    client, server = handshake(certs.load("n1"), certs.load("n2"), ask=True)
    pair = _Pair(client, server)
    limit = server._local_max_streams_bidi
    first = limit.sent
    for _ in range(3):
        pair.requests(0, 100)  # more than the 128 open streams allowed: some wait
        for _ in range(30):
            pair.transmit(0)
            pair.deliver(0, keep=0)
            pair.deliver(1, keep=0)
            pair.now += 0.02
            pair.fire_timers()
    assert limit.sent > first + 128  # announced more than once
    assert pair.skipped > 0
