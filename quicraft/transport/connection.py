"""One QUIC connection, either end: authentication, keepalive and close.

PeerProtocol is the single aioquic QuicConnectionProtocol subclass for servers and dialers;
Connection is the small public face of an authenticated one; its streams live in a StreamTable
(dispatch.py). Rules:

- Nothing reaches a handler before the peer is verified. Verification runs synchronously on
  the TLS HandshakeCompleted event (verify.py, then the server's `admit`), and stream events
  that arrive before it (none should: the server cannot decrypt 1-RTT data before the client's
  Finished) are held and replayed only if the peer is accepted. A refused peer is closed with
  ErrorCode.REFUSED and the refusal as reason, logged, and (on a server) counted by reason.
  A check that raises refuses too (fail closed): every peer is refused or accepted at once.
- A dialer learns that the server accepted it from the ACK of a PING sent after the handshake:
  the server verifies in the same step in which it first can decrypt that PING, and a refused
  connection only ever sends CONNECTION_CLOSE, so the ACK means "accepted".
- Idle connections stay up: a PING every `keepalive` seconds, well inside the idle timeout.
- Before a client is verified it costs the server memory and nothing proves who it is, so a
  server bounds those connections (`Endpoint.half_open`; quic.py refuses to make more) and
  drops each one, silently, that is not verified within `handshake_timeout` seconds.
- After it is verified, a server bounds how many connections one identity holds open
  (`Endpoint.slots`, per_identity.py): the one too many is refused like any other refusal.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from aioquic.tls import AlertDescription
from cryptography import x509

from . import _aioquic_private as private
from .dispatch import Handler, StreamEvent, StreamTable
from .errors import ErrorCode, RefusedError, TransportError
from .identity import Identity
from .per_identity import IdentitySlots
from .stream import Stream
from .verify import Peer, Refusal, verify_peer

log = logging.getLogger("quicraft.transport")

Admit = Callable[[Peer, str], str | None]  # a reason to refuse, or None to admit

_ACCEPTED_PING = 1  # the dialer's "did the server accept me?" probe
_KEEPALIVE_PING = 2
_PROBE_PING = 3  # Connection.probe(): "are you there?"
_MAX_REASON = 200  # bytes of reason phrase we put in a CONNECTION_CLOSE
_CRYPTO_ERRORS = range(0x100, 0x200)  # QUIC transport error codes that carry a TLS alert


@dataclass(slots=True)
class Endpoint:
    """What all connections of one serve() or one connect() share."""

    identity: Identity
    ca: x509.Certificate
    handlers: Mapping[str, Handler]
    max_frame: int
    keepalive: float
    expect_node_id: str | None = None
    admit: Admit | None = None
    on_connection: Callable[[Connection], None] | None = None
    handshake_timeout: float = 10.0
    refusals: Counter[str] = field(default_factory=Counter)  # what a server refused, by reason
    protocols: set[PeerProtocol] = field(default_factory=set)
    #: A server's connections that have not been verified yet, and are not over.
    half_open: set[PeerProtocol] = field(default_factory=set)
    #: A server's verified connections by identity, and how many one may hold (per_identity.py).
    slots: IdentitySlots = field(default_factory=lambda: IdentitySlots(0))


class Connection:
    """An authenticated QUIC connection to `peer` speaking `alpn`."""

    def __init__(self, protocol: PeerProtocol, peer: Peer, alpn: str, dialed: bool) -> None:
        self._protocol = protocol
        self.peer = peer
        self.alpn = alpn
        self.dialed = dialed  # True if we initiated it

    @property
    def closed(self) -> bool:
        return self._protocol.failure() is not None

    async def open_stream(self) -> Stream:
        return self._protocol.streams.open()

    def silent_for(self) -> float:
        """Seconds since the last datagram from the peer (or since the connection began)."""
        return self._protocol.silent_for()

    def probe(self) -> None:
        """Ask the peer for an acknowledgement now: a live peer sends one within its ACK
        delay (25 ms at most), which silent_for() then shows."""
        self._protocol.probe()

    @property
    def rtt(self) -> float | None:
        """The smoothed round-trip time in seconds (None before the first sample)."""
        return private.smoothed_rtt(self._protocol._q)

    @property
    def failure(self) -> TransportError | None:
        """Why the connection ended (a RefusedError if the peer refused us); None while open."""
        return self._protocol.failure()

    def close(self, reason: str = "") -> None:
        self._protocol.shut(reason)

    def refuse(self, refusal: Refusal) -> None:
        """Close as a refusal: the peer's end fails with RefusedError(refusal.reason)."""
        self._protocol.shut(str(refusal), ErrorCode.REFUSED)

    @property
    def ended(self) -> bool:
        """True once the connection is over: closed and its closing period past, or (dialed)
        closed and its UDP socket freed."""
        return self._protocol.ended()

    async def wait_closed(self, within: float | None = None) -> None:
        """Until the connection is over (see `ended`). The closing period after close() lasts
        three probe timeouts (tens of ms on a LAN), in which a late packet of the peer gets
        the close again. With `within`, at most that many seconds: a closed dialer's UDP
        socket is then freed at once."""
        try:
            async with asyncio.timeout(within):
                await self._protocol.wait_ended()
        except TimeoutError:
            if not self.closed:
                raise
            await self._protocol.release()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Connection {self.alpn} {self.peer.name} {self.peer.node_id} {state}>"


class PeerProtocol(QuicConnectionProtocol):
    # Our attribute names must not collide with QuicConnectionProtocol's private ones
    # (tests/transport/test_transport_aioquic_private.py checks this).

    def __init__(self, quic: QuicConnection, *, endpoint: Endpoint, dialed: bool) -> None:
        super().__init__(quic)
        self._q = quic
        self._ep = endpoint
        self._dialer = dialed
        self._evloop = asyncio.get_running_loop()
        self.remote: tuple[str, int] = ("", 0)
        self.connection: Connection | None = None
        self.established: asyncio.Future[Connection] = self._evloop.create_future()
        self.streams = StreamTable(
            quic,
            dialer=dialed,
            max_frame=endpoint.max_frame,
            transmit=self.transmit,
            failure=self.failure,
        )
        private.pace_by_reading(quic, self.streams)
        self._alpn = ""
        self._refused = False
        self._held: list[StreamEvent] = []
        self._ping_handle: asyncio.TimerHandle | None = None
        self._failure: TransportError | None = None
        self._udp: asyncio.BaseTransport | None = None
        self._heard_at = self._evloop.time()  # of the last datagram from the peer
        self._terminated = False
        self._released = self._evloop.create_future()  # a dialer's UDP socket is closed
        self._overdue: asyncio.TimerHandle | None = None
        endpoint.protocols.add(self)
        if not dialed:  # a dialer's connect() has a timeout of its own
            endpoint.half_open.add(self)
            self._overdue = self._evloop.call_later(
                endpoint.handshake_timeout, self._handshake_overdue
            )

    def failure(self) -> TransportError | None:
        """Why this connection is closed or closing; None while it is usable."""
        return self._failure

    def shut(self, reason: str, code: ErrorCode = ErrorCode.NO_ERROR) -> None:
        if self._failure is None:
            why = reason or "closed"
            self._failure = TransportError(f"connection with {_fmt(self.remote)} closed: {why}")
            self.streams.connection_lost(self._failure)
        self._give_back_slot()
        self.close(code, _clip(reason))

    # -- asyncio / aioquic hooks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._udp = transport
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        # A dialer's own UDP socket is closed (a server's is shared: it never gets here).
        if not self._released.done():
            self._released.set_result(None)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if not self.remote[0]:
            self.remote = (str(addr[0]).removeprefix("::ffff:"), int(addr[1]))
        # aioquic transmits after every datagram; waiting for the end of this loop turn lets
        # the answers that the datagram's events produce leave in the same packets (measured:
        # about half of the transmits sent nothing).
        self._heard_at = now = self._evloop.time()
        private.receive_acking_every_second(self._q, cast(bytes, data), addr, now)
        self._process_events()
        if private.closing(self._q):
            self._give_back_slot()  # the peer closed: aioquic says so only after draining
        self.streams.transmit_soon()

    def error_received(self, exc: Exception) -> None:
        # With a connected UDP socket, ICMP "port unreachable" surfaces here: fail fast.
        log.debug("UDP error with %s: %s", _fmt(self.remote), exc)
        self._fail_establish(TransportError(f"{_fmt(self.remote)} is unreachable: {exc}"))

    def transmit(self) -> None:
        self.streams.flush()
        private.transmit(self, self.streams.wrote, self._evloop.time(), super().transmit)
        self.streams.transmitted()

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.HandshakeCompleted):
            self._on_handshake(event.alpn_protocol)
        elif isinstance(event, StreamEvent):
            if self.connection is not None:
                self.streams.dispatch(event)
            elif not self._refused:
                self._held.append(event)
        elif isinstance(event, events.PingAcknowledged):
            conn = self.connection
            if event.uid == _ACCEPTED_PING and conn is not None and not self.established.done():
                self.established.set_result(conn)
        elif isinstance(event, events.ConnectionTerminated):
            self._on_terminated(event)

    # -- authentication -------------------------------------------------------------------------

    def _on_handshake(self, alpn: str | None) -> None:
        self._alpn = alpn or ""
        ep = self._ep
        try:
            verdict: Peer | Refusal = verify_peer(
                ca=ep.ca,
                certificate=private.peer_certificate(self._q),
                cluster=ep.identity.cluster,
                alpn=alpn,
                peer_is_server=self._dialer,
                address=self.remote,
                expect_node_id=ep.expect_node_id if self._dialer else None,
            )
        except Exception:
            # Fail closed: escaping here would leave the peer neither refused nor accepted,
            # its streams held (unbounded) and its dialer's PING acknowledged.
            log.exception("checking the certificate of %s failed", _fmt(self.remote))
            verdict = Refusal("bad_certificate", "its certificate could not be checked")
        if isinstance(verdict, Peer) and not self._dialer and ep.admit is not None:
            try:
                reason = ep.admit(verdict, self._alpn)
            except Exception:
                log.exception("the admission check failed for %s", verdict.name)
                reason = "the admission check failed"
            if reason is not None:
                verdict = Refusal("not_admitted", reason)
        if isinstance(verdict, Peer) and not self._dialer:
            verdict = ep.slots.refusal(verdict, self._alpn) or verdict
        if isinstance(verdict, Refusal):
            self._refuse(verdict)
            return
        self._ep.half_open.discard(self)
        if self._overdue is not None:
            self._overdue.cancel()
        self.connection = conn = Connection(self, verdict, self._alpn, self._dialer)
        if not self._dialer:
            ep.slots.take(verdict, self._alpn, self)
        self.streams.connection = conn
        self.streams.handler = ep.handlers.get(self._alpn)
        self._ping_handle = self._evloop.call_later(ep.keepalive, self._keepalive)
        if self._dialer:
            self._q.send_ping(_ACCEPTED_PING)  # goes out with the transmit() after this event
        else:
            peer = f"{verdict.name} ({verdict.role.value}, id {verdict.node_id})"
            log.info("accepted %s from %s on %s", peer, _fmt(self.remote), self._alpn)
            if ep.on_connection is not None:
                try:
                    ep.on_connection(conn)
                except Exception:
                    log.exception("on_connection failed for %s", verdict.name)
        held, self._held = self._held, []
        for event in held:
            self.streams.dispatch(event)

    def _refuse(self, refusal: Refusal) -> None:
        self._refused = True
        self._held.clear()
        where = _fmt(self.remote)
        if self._dialer:
            log.warning("refused the server at %s: %s", where, refusal)
            message = f"refused the server at {where}: {refusal}"
            self._fail_establish(RefusedError(message, refusal.reason, refusal.detail))
        else:
            self._ep.refusals[refusal.reason] += 1
            log.warning("refused a connection from %s on %s: %s", where, self._alpn, refusal)
        self._failure = TransportError(f"connection with {where} refused: {refusal}")
        self.close(ErrorCode.REFUSED, _clip(str(refusal)))

    def _fail_establish(self, error: TransportError) -> None:
        if self._dialer and not self.established.done():
            self.established.set_exception(error)

    # -- the end --------------------------------------------------------------------------------

    def _on_terminated(self, event: events.ConnectionTerminated) -> None:
        error = termination_error(event, _fmt(self.remote))
        if self.connection is None and not self._refused and not self._dialer:
            if isinstance(error, RefusedError):
                # A TLS-level failure: no proof of key possession, or the client does not
                # trust our certificate. Either way, not a peer we talked to: count it.
                self._ep.refusals[error.reason] += 1
                log.warning("refused a connection from %s: %s", _fmt(self.remote), error.reason)
        elif self.connection is not None:
            why = self._failure or error
            log.info("connection with %s ended: %s", self.connection.peer.name, why)
        if self._failure is None:
            self._failure = error
        self._fail_establish(error)
        self.streams.connection_lost(self._failure)
        if self._ping_handle is not None:
            self._ping_handle.cancel()
        self._ep.protocols.discard(self)
        self._ep.half_open.discard(self)
        self._give_back_slot()
        if self._overdue is not None:
            self._overdue.cancel()
        self._terminated = True
        if self._dialer and self._udp is not None:
            self._udp.close()  # a dialer owns its UDP socket; nothing more will be sent on it

    def _give_back_slot(self) -> None:
        """The connection is over for its identity's count (per_identity.py): closed by us,
        by the peer, or ended. Giving back twice changes nothing."""
        if self.connection is not None and not self._dialer:
            self._ep.slots.give_back(self.connection.peer, self)

    def _handshake_overdue(self) -> None:
        """Not verified in time: drop the connection without a word. Junk, a client that went
        silent, or one that keeps its handshake alive without finishing it; whoever sent it
        need not hear from us (its address may not even be its own)."""
        if self._terminated or self.connection is not None:
            return
        self._ep.refusals["handshake_timeout"] += 1
        log.debug("dropped an unfinished handshake from %s", _fmt(self.remote))
        self._failure = self._failure or TransportError("handshake timed out")
        private.time_out(self._q, self._evloop.time())
        self._process_events()
        self.transmit()

    def ended(self) -> bool:
        if self._dialer:  # closed, and its socket too (at termination, or by release())
            return self._failure is not None and self._released.done()
        return self._terminated

    async def wait_ended(self) -> None:
        await self.wait_closed()  # aioquic's: until ConnectionTerminated
        if self._dialer:
            await asyncio.shield(self._released)  # the socket closes in the next loop turn

    async def release(self) -> None:
        """Free a dialer's UDP socket now, before the closing period ends."""
        if self._dialer and self._udp is not None:
            self._udp.close()
            await asyncio.shield(self._released)

    def silent_for(self) -> float:
        return self._evloop.time() - self._heard_at

    def probe(self) -> None:
        if self._failure is None:
            self._q.send_ping(_PROBE_PING)
            self.transmit()

    def _keepalive(self) -> None:
        if self._failure is None:
            self._q.send_ping(_KEEPALIVE_PING)
            self.transmit()
            self._ping_handle = self._evloop.call_later(self._ep.keepalive, self._keepalive)


def termination_error(event: events.ConnectionTerminated, where: str) -> TransportError:
    """What a ConnectionTerminated means for whoever was using the connection."""
    code, phrase = event.error_code, _shown(event.reason_phrase)
    if event.frame_type is None:  # an application close, with one of our ErrorCodes
        if code == ErrorCode.REFUSED:
            reason, _, detail = phrase.partition(":")
            message = f"{where} refused the connection: {phrase}"
            return RefusedError(message, reason or "refused", detail.strip())
        return TransportError(f"connection with {where} closed: {phrase or 'no reason'}")
    if code in _CRYPTO_ERRORS:
        try:
            alert = AlertDescription(code - 0x100).name
        except ValueError:
            alert = f"alert_{code - 0x100}"
        detail = f" ({phrase})" if phrase else ""
        if phrase in _NO_COMMON_CA:
            detail += "; the two ends' certificates are not of the same CA: give every node "
            detail += "and client a copy of the same DIR/CLUSTER/ca.crt"
        return RefusedError(f"TLS handshake with {where} failed: {alert}{detail}", f"tls_{alert}")
    return TransportError(f"connection with {where} lost: {phrase or hex(code)}")


#: How OpenSSL says that a certificate is not signed by the CA its verifier trusts.
_NO_COMMON_CA = frozenset(
    {"unable to get local issuer certificate", "certificate signature failure"}
)


def _shown(phrase: str) -> str:
    """A peer's reason phrase as we repeat it in errors and logs. Anyone may send one (in an
    Initial packet, before any check), so it is cut short and its control and format
    characters (escape sequences, newlines, bidi overrides) are replaced."""
    return "".join(c if c.isprintable() else "?" for c in phrase[:_MAX_REASON])


def _clip(reason: str) -> str:
    return reason.encode()[:_MAX_REASON].decode(errors="ignore")


def _fmt(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
