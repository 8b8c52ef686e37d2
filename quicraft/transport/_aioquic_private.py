"""Every use of aioquic's private attributes, in one place, each with why we need it.

aioquic (1.x) has no public API for twelve things quicraft needs:

1. Asking the client for a certificate. The TLS server only sends a CertificateRequest when
   `tls.Context._request_client_certificate` is set ("for test purposes only"). The TLS context is
   created inside `QuicConnection._initialize`, in the same call that handles the ClientHello,
   so the flag must be set right there: we turn the server's connection into a subclass whose
   `_initialize` sets it. With the flag, aioquic checks the client's CertificateVerify (proof that
   the client holds the key, bound to this handshake) but not its chain: verify.py does that.
2. Reading the peer's certificate after the handshake (`tls.Context._peer_certificate`), on both
   ends, to run verify.py on it.
3. Knowing how much of a stream is written but not yet acknowledged (`QuicConnection._streams`,
   `QuicStreamSender._buffer_start/_buffer_stop`), so that Stream.drain() can wait for it.
4. Acknowledging less often (`QuicConnection._ack_delay`, fixed at 1 ms). Under load every
   connection then sends an ACK-only packet per millisecond; waiting up to ACK_DELAY_S lets most
   ACKs ride on the next response or append instead (measured: about 20 % more writes/s).
   It stays inside the 25 ms max_ack_delay aioquic announces to the peer. aioquic waits out
   the delay however many packets arrive; `receive_acking_every_second` makes the ACK due
   once two ack-eliciting packets wait for it (`QuicPacketSpace.ack_at`), as RFC 9000 asks,
   so a bulk sender's window grows as fast as with immediate ACKs. With that, 20 ms instead
   of 10 (64 writes in flight, 6 alternating pairs: writes/s +7.6 %, CPU per write -10 %;
   at 16, no change): more answers and appends leave before the delay runs out.

5. The connection's smoothed round-trip time (`QuicConnection._loss._rtt_smoothed`), which
   the loss recovery keeps anyway: the peer round-trip metric reads it.
6. A configuration per client on a server. QuicServer builds every connection from its one
   `_configuration`, but the datagram size belongs to the path to each client (path.py).
   PerClientConfigServer sets that attribute from the client's address just before handling a
   long-header datagram, the only kind that can open a connection.

7. Acknowledging with data. aioquic writes an ACK frame only once its delay is up, so a
   packet of stream data leaves without the acknowledgement the same connection owes, and an
   ACK-only packet follows when the timer fires (about a third of all datagrams at 16 writes
   in flight, each costing a timer, a send and a receive). `acknowledge_with_data` makes the
   owed acknowledgement due now (`QuicPacketSpace.ack_at` of the 1-RTT space) just before
   packets with data are built, as most QUIC stacks do by themselves.
8. Not building packets when there is nothing to send. aioquic's protocol transmits after
   every datagram it receives, and building packets costs as much as sending one even when
   none comes out (about half of all transmits under load: the ACK waits, see 4., and the
   answer is not written yet). `nothing_to_send` reads the state aioquic's packet builder
   reads and says "nothing" only where the builder would certainly write no frame;
   `skip_transmit` then does the rest of aioquic's `transmit` (its timer), so a delayed ACK,
   a loss timer or a probe still leaves on time. A test drives random traffic, losses and
   timers through two connections and checks that every skipped transmit would have been
   empty.

9. Not making a connection for every Initial. QuicServer makes one (and keeps it until its
   idle timeout) for each Initial datagram with a connection id it does not know, before
   anything is checked: junk Initials from one sender cost about 75 KB each, a real
   ClientHello that goes no further about 100 KB. PerClientConfigServer looks the id up in
   `QuicServer._protocols` first and drops the datagram when `may_open` says no (quic.py
   bounds the handshakes in progress).
10. Dropping a handshake that takes too long, silently. aioquic has no call that ends a
   connection without a CONNECTION_CLOSE, except its idle timeout, which every packet the
   client sends (even an Initial PING) pushes back. `time_out` makes that timeout due now
   (`QuicConnection._close_at`).
11. Granting flow-control credit as the application reads. aioquic raises a stream's and the
   connection's receive limits by what has *arrived* (it doubles a limit once half is used),
   and hands every byte to the application at once, so a peer writing faster than a handler
   reads made us buffer without bound. ReadPacedQuicConnection raises them instead by what
   the application has *taken* (`ReadCredit`, kept by dispatch.py): a stream's limit to what
   its reader took plus a window, the connection's to everything received minus what waits
   (whole frames not read, and what aioquic holds after a gap in a stream) plus a window,
   each once half a window can be granted. It sets `QuicStream.max_stream_data_local` and
   `Limit.value` of `_local_max_data` and lets aioquic write the frames (and resend them when
   lost), hiding `QuicStreamReceiver.highest_offset` and `Limit.used`, the only inputs of its
   own rule, during the call.
12. Knowing that a connection is closing (`QuicConnection._state`) as soon as the peer's
   CONNECTION_CLOSE arrives: aioquic reports it (ConnectionTerminated) only when the draining
   period ends, three probe timeouts later, and a client that closes a connection and dials
   again at once found its identity's slot still taken (per_identity.py).

`check()` asserts that all of these still exist; serve() calls it once, and a test calls it, so
an aioquic upgrade that moves them fails loudly instead of silently skipping client auth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream
from cryptography import x509


class ReadCredit(Protocol):
    """What has been taken of the streams a connection delivers (see 11. above)."""

    stream_window: int
    connection_window: int

    def taken(self, stream_id: int) -> int | None:
        """Bytes of a stream its reader took; None for one that may be sent nothing more."""

    def waiting(self) -> int:
        """Bytes of whole frames received and not taken yet, on all streams."""


class ReadPacedQuicConnection(QuicConnection):
    """A QuicConnection granting credit by `read_credit` once it is set (see 11. above)."""

    read_credit: ReadCredit | None = None

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace) -> None:
        credit = self.read_credit
        if credit is None:
            super()._write_connection_limits(builder, space)
            return
        max_data = self._local_max_data
        limit = connection_credit(self, credit)
        if limit is not None:
            max_data.value = limit
        used, max_data.used = max_data.used, 0  # aioquic's own rule must see nothing to grant
        try:
            super()._write_connection_limits(builder, space)
        finally:
            max_data.used = used

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        credit = self.read_credit
        if credit is None or not stream.max_stream_data_local:
            super()._write_stream_limits(builder, space, stream)
            return
        limit = stream_credit(stream, credit)
        if limit is not None:
            stream.max_stream_data_local = limit
        receiver = stream.receiver
        highest, receiver.highest_offset = receiver.highest_offset, 0  # as above
        try:
            super()._write_stream_limits(builder, space, stream)
        finally:
            receiver.highest_offset = highest


def pace_by_reading(quic: QuicConnection, credit: ReadCredit) -> None:
    """Grant `quic`'s peer credit by what `credit` says was taken (see 11. above)."""
    if not isinstance(quic, ReadPacedQuicConnection):
        raise TypeError("expected a ReadPacedQuicConnection")
    quic.read_credit = credit


def stream_credit(stream: QuicStream, credit: ReadCredit) -> int | None:
    """The stream's new receive limit, if half a window or more can be granted now."""
    window, limit = credit.stream_window, stream.max_stream_data_local
    if stream.receiver.highest_offset + window - limit < window // 2:
        return None  # not even all that arrived would do (the usual answer, found at once)
    taken = None if stream.stream_id is None else credit.taken(stream.stream_id)
    if taken is None or taken + window - limit < window // 2:
        return None
    return taken + window


def connection_credit(quic: QuicConnection, credit: ReadCredit) -> int | None:
    """The connection's new receive limit, if half a window or more can be granted now."""
    window, max_data = credit.connection_window, quic._local_max_data
    if max_data.used + window - max_data.value < window // 2:
        return None  # as in stream_credit
    waiting = credit.waiting()
    for stream in quic._streams.values():  # and what aioquic holds after a gap, on any stream
        waiting += stream.receiver.highest_offset - stream.receiver.starting_offset()
    taken = max_data.used - waiting
    return taken + window if taken + window - max_data.value >= window // 2 else None


def _read_credit(quic: QuicConnection) -> ReadCredit | None:
    return quic.read_credit if isinstance(quic, ReadPacedQuicConnection) else None


def _raises_connection_limit(quic: QuicConnection, credit: ReadCredit | None) -> bool:
    """Whether writing the connection's limits would raise MAX_DATA (aioquic's rule, or 11.)."""
    if credit is None:
        return quic._local_max_data.used * 2 > quic._local_max_data.value
    return connection_credit(quic, credit) is not None


def _raises_stream_limit(stream: QuicStream, credit: ReadCredit | None) -> bool:
    """Whether writing the stream's limits would raise them (aioquic's rule, or 11.)."""
    if not stream.max_stream_data_local:
        return False
    if credit is None:
        return stream.receiver.highest_offset * 2 > stream.max_stream_data_local
    return stream_credit(stream, credit) is not None


class _ClientCertQuicConnection(ReadPacedQuicConnection):
    """A server connection whose TLS context asks the client for a certificate."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls._request_client_certificate = True


def request_client_certificate(quic: QuicConnection) -> None:
    """Make a server connection that has not yet seen a packet request a client certificate.

    aioquic's QuicServer builds the QuicConnection itself, so we cannot construct our subclass;
    switching the class of the fresh instance (it adds no state) is the smallest hook.
    """
    if type(quic) is not QuicConnection or quic.configuration.is_client:
        raise TypeError("expected a fresh aioquic server QuicConnection")
    quic.__class__ = _ClientCertQuicConnection


#: How long a received packet may wait for its acknowledgement (see 4. above).
ACK_DELAY_S = 0.020


def receive_acking_every_second(quic: QuicConnection, data: bytes, addr: Any, now: float) -> None:
    """`quic.receive_datagram`, after which an acknowledgement is due at once if two
    ack-eliciting packets now wait for one (RFC 9000 section 13.2.2; see 4. above)."""
    space = quic._spaces.get(tls.Epoch.ONE_RTT)
    owed = space.ack_at if space is not None else None
    if space is None or owed is None:
        quic.receive_datagram(data, addr, now=now)
        return
    space.ack_at = None  # aioquic sets it again only for an ack-eliciting packet
    quic.receive_datagram(data, addr, now=now)
    space.ack_at = now if space.ack_at is not None else owed


def delay_acks(quic: QuicConnection) -> None:
    """Let `quic` hold acknowledgements for up to ACK_DELAY_S (RFC 9000 section 13.2.1)."""
    quic._ack_delay = ACK_DELAY_S


class PerClientConfigServer(QuicServer):
    """A QuicServer whose new connections take `configure(client address)` (see 6. above),
    and that makes a new connection only while `may_open(client address)` allows (see 9.)."""

    def __init__(
        self,
        *,
        configure: Callable[[tuple[Any, ...]], QuicConfiguration],
        may_open: Callable[[tuple[Any, ...]], bool],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._configure = configure
        self._may_open = may_open

    def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if isinstance(data, bytes) and data[:1] and data[0] & 0x80:  # a long header
            if not self._wanted(data, addr):
                return
            self._configuration = self._configure(addr)
        super().datagram_received(data, addr)

    def _wanted(self, data: bytes, addr: tuple[Any, ...]) -> bool:
        """False for a long-header datagram to drop unanswered: one that would open a new
        connection that `may_open` refuses, or an unsupported version's packet too small to
        open one (aioquic would answer it with a larger Version Negotiation packet, to an
        address nobody has validated)."""
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self._configuration.connection_id_length
            )
        except ValueError:
            return False  # aioquic drops it too
        if header.version not in self._configuration.supported_versions:
            return len(data) >= SMALLEST_MAX_DATAGRAM_SIZE
        opens = (
            header.packet_type == QuicPacketType.INITIAL
            and len(data) >= SMALLEST_MAX_DATAGRAM_SIZE
            and header.destination_cid not in self._protocols
        )
        return not opens or self._may_open(addr)


def time_out(quic: QuicConnection, now: float) -> None:
    """End `quic` now as its idle timeout would: nothing is sent (see 10. above). The
    caller processes the ConnectionTerminated event this queues."""
    quic._close_at = now
    quic.handle_timer(now)


def closing(quic: QuicConnection) -> bool:
    """True once either end has closed the connection, or it ended (see 12. above)."""
    return quic._state in _CLOSING


_CLOSING = frozenset(
    {QuicConnectionState.CLOSING, QuicConnectionState.DRAINING, QuicConnectionState.TERMINATED}
)


def peer_certificate(quic: QuicConnection) -> x509.Certificate | None:
    """The leaf certificate the peer presented in the handshake (None if it sent none)."""
    return quic.tls._peer_certificate


def unacked_bytes(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written on a stream that the peer has not acknowledged yet (0 once it is gone)."""
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    return stream.sender._buffer_stop - stream.sender._buffer_start


def acknowledge_with_data(quic: QuicConnection, now: float) -> None:
    """Let an acknowledgement still owed ride in the packets about to be built (see 7.)."""
    space = quic._spaces.get(tls.Epoch.ONE_RTT)
    if space is not None and space.ack_at is not None and space.ack_at > now:
        space.ack_at = now


def nothing_to_send(quic: QuicConnection, now: float) -> bool:
    """True only if building packets now would write no frame at all (see 8. above).

    It checks what `QuicConnection.datagrams_to_send` and `_write_application` check, in the
    same terms; anything unusual (a handshake, a close, a second path) answers False, so
    aioquic decides."""
    if (
        quic._state is not QuicConnectionState.CONNECTED
        or quic._close_pending
        or not quic._handshake_confirmed
        or quic._handshake_done_pending
        or quic._ping_pending
        or quic._probe_pending
        or quic._datagrams_pending
        or quic._retire_connection_ids
        or quic._streams_blocked_pending
        or quic._remote_preferred_address is not None
        or len(quic._network_paths) != 1
    ):
        return False
    path = quic._network_paths[0]
    if not path.is_validated or path.remote_challenges:
        return False
    ack_at = quic._spaces[tls.Epoch.ONE_RTT].ack_at
    if ack_at is not None and ack_at <= now:
        return False
    if not quic._crypto_streams[tls.Epoch.ONE_RTT].sender.buffer_is_empty:
        return False
    if any(not cid.was_sent for cid in quic._host_cids):
        return False
    max_data = quic._local_max_data
    credit = _read_credit(quic)
    if max_data.value != max_data.sent or _raises_connection_limit(quic, credit):
        return False
    for limit in (quic._local_max_streams_bidi, quic._local_max_streams_uni):
        # aioquic holds MAX_STREAMS back while the peer has at least as many streams left to
        # open as the update would grant.
        if limit.value != limit.sent and limit.sent - limit.used < limit.value - limit.sent:
            return False
    for stream in quic._streams.values():
        sender, receiver = stream.sender, stream.receiver
        if (
            not sender.buffer_is_empty
            or sender.reset_pending
            or receiver.stop_pending
            or stream.is_finished  # discarding it may announce MAX_STREAMS
            or stream.max_stream_data_local_sent != stream.max_stream_data_local
            or _raises_stream_limit(stream, credit)
        ):
            return False
    return True


def transmit(
    protocol: QuicConnectionProtocol, wrote: bool, now: float, build: Callable[[], None]
) -> None:
    """A transmit as quicraft makes it: after stream data was written, an owed acknowledgement
    rides with it (7.); with none written, `build` (aioquic's `transmit`) runs only if there is
    something to send, else only its timer is kept (8.)."""
    if wrote:
        acknowledge_with_data(protocol._quic, now)
    elif nothing_to_send(protocol._quic, now):
        skip_transmit(protocol)
        return
    build()


def skip_transmit(protocol: QuicConnectionProtocol) -> None:
    """aioquic's `QuicConnectionProtocol.transmit` where `nothing_to_send` said so: no packets,
    only its bookkeeping, then its timer (re)armed for `get_timer()` (see 8. above)."""
    protocol._transmit_task = None
    quic = protocol._quic
    # datagrams_to_send starts by forgetting the pacing time; left set, a pacing time in the
    # past would fire the timer again and again with nothing to pace.
    quic._pacing_at = None
    timer_at = quic.get_timer()
    if protocol._timer is not None and protocol._timer_at != timer_at:
        protocol._timer.cancel()
        protocol._timer = None
    if protocol._timer is None and timer_at is not None:
        protocol._timer = protocol._loop.call_at(timer_at, protocol._handle_timer)
    protocol._timer_at = timer_at


def smoothed_rtt(quic: QuicConnection) -> float | None:
    """The smoothed round-trip time in seconds, None before the first sample (see 5. above)."""
    loss = quic._loss
    return loss._rtt_smoothed if loss._rtt_initialized else None


#: What nothing_to_send reads of a QuicConnection (each created in its __init__).
_READ_BY_NOTHING_TO_SEND = (
    "_state", "_close_pending", "_handshake_confirmed", "_handshake_done_pending",
    "_ping_pending", "_probe_pending", "_datagrams_pending", "_retire_connection_ids",
    "_streams_blocked_pending", "_remote_preferred_address", "_network_paths",
    "_crypto_streams", "_host_cids", "_local_max_data", "_local_max_streams_bidi",
    "_local_max_streams_uni", "_pacing_at",
)  # fmt: skip


def _missing(kind: str, thing: object, names: tuple[str, ...]) -> list[str]:
    return [f"{kind}.{name}" for name in names if not hasattr(thing, name)]


def check() -> None:
    """Raise RuntimeError if this aioquic no longer has what the functions above rely on."""
    problems: list[str] = []
    context = tls.Context(is_client=False)
    for name in ("_request_client_certificate", "_peer_certificate"):
        if not hasattr(context, name):
            problems.append(f"tls.Context.{name}")
    if "_initialize" not in vars(QuicConnection):
        problems.append("QuicConnection._initialize")
    for name in ("_configuration", "_protocols"):
        if name not in QuicServer.datagram_received.__code__.co_names:
            problems.append(f"QuicServer.{name}")
    if "_close_at" not in QuicConnection.handle_timer.__code__.co_names:
        problems.append("QuicConnection._close_at")
    quic = QuicConnection(configuration=QuicConfiguration(is_client=True))
    if not isinstance(getattr(quic, "_ack_delay", None), float):
        problems.append("QuicConnection._ack_delay")
    loss = getattr(quic, "_loss", None)
    if not isinstance(getattr(loss, "_rtt_smoothed", None), float) or not hasattr(
        loss, "_rtt_initialized"
    ):
        problems.append("QuicConnection._loss._rtt_smoothed")
    if not isinstance(getattr(quic, "_spaces", None), dict) or "ack_at" not in vars(
        QuicPacketSpace()
    ):
        problems.append("QuicConnection._spaces[].ack_at")
    if not isinstance(getattr(quic, "_state", None), QuicConnectionState):
        problems.append("QuicConnection._state")
    if not isinstance(getattr(quic, "_streams", None), dict):
        problems.append("QuicConnection._streams")
    stream = QuicStream(stream_id=0)
    sender = stream.sender
    for name in ("_buffer_start", "_buffer_stop"):
        if not isinstance(getattr(sender, name, None), int):
            problems.append(f"QuicStreamSender.{name}")
    problems += _missing("QuicConnection", quic, _READ_BY_NOTHING_TO_SEND)
    problems += _missing("QuicStream", stream, ("max_stream_data_local_sent",))
    problems += _missing("QuicStreamSender", sender, ("buffer_is_empty", "reset_pending"))
    problems += _missing(
        "QuicStreamReceiver", stream.receiver, ("stop_pending", "highest_offset", "starting_offset")
    )
    problems += _missing("Limit", quic._local_max_data, ("used", "value", "sent"))
    for names, code in (
        (("_pacing_at", "_write_application"), QuicConnection.datagrams_to_send.__code__),
        (("_timer", "_timer_at", "_transmit_task", "_handle_timer", "get_timer"),
         QuicConnectionProtocol.transmit.__code__),
        (("max_stream_data_local", "highest_offset"),
         QuicConnection._write_stream_limits.__code__),
        (("_local_max_data", "used", "value"), QuicConnection._write_connection_limits.__code__),
    ):  # fmt: skip
        problems += [f"{code.co_qualname} uses {n}" for n in names if n not in code.co_names]
    if problems:
        raise RuntimeError(
            "this aioquic version lacks private attributes quicraft relies on: "
            + ", ".join(problems)
            + " (see quicraft/transport/_aioquic_private.py)"
        )
