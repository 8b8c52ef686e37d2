"""serve() and connect(): quicraft's QUIC endpoints over aioquic, mutually authenticated.

One UDP port serves several ALPNs; each ALPN has a handler called once per stream the peer
opens. Rules:

- Both ends prove their key (TLS 1.3 CertificateVerify) and both ends run verify.py on the
  other's certificate; see connection.py for when, and _aioquic_private.py for how the server
  gets aioquic to ask for a client certificate at all.
- The dialer also lets aioquic check the server's chain against the cluster CA (cadata,
  CERT_REQUIRED), with no hostname check: the identity is the key, not a DNS name, so
  `server_name` stays None (which also leaves SNI out).
- connect() returns only once the server has accepted us; any refusal (by either end, in TLS or
  in verify.py / admit) is a RefusedError, unreachable or too slow is a TransportError.
- A dialer uses a connected UDP socket of its own, so "port unreachable" fails fast.
- A connection's datagrams are as large as its path is known to carry (path.py: larger only
  on loopback); a server sizes each connection by the address of the client's first datagram.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from quicraft.wire.frame import MAX_FRAME

from . import _aioquic_private as private
from . import path
from ._asyncio_private import read_in_batches
from .connection import Admit, Connection, Endpoint, PeerProtocol
from .dispatch import Handler
from .errors import ErrorCode, RefusedError, TransportError
from .identity import Identity
from .per_identity import IdentitySlots
from .stream import Stream, receive_windows
from .verify import ALPN_CLIENT, ALPN_EVENTS, ALPN_MGMT, ALPN_RAFT, Peer

# aioquic logs each failed handshake on its "quic" logger, which connect() and serve() also
# report as errors. With no handler anywhere, Python's last-resort handler would print those
# lines on stderr of a program that configured no logging; this one drops them (the usual
# library practice). Configured logging still receives them: records propagate to the root.
logging.getLogger("quic").addHandler(logging.NullHandler())

__all__ = [
    "ALPN_CLIENT",
    "ALPN_EVENTS",
    "ALPN_MGMT",
    "ALPN_RAFT",
    "Admit",
    "Connection",
    "Handler",
    "Peer",
    "RefusedError",
    "Server",
    "Stream",
    "TransportError",
    "connect",
    "serve",
]

IDLE_TIMEOUT = 30.0  # seconds without a packet before QUIC drops a connection
#: A client not verified this many seconds after its first packet is dropped: connect() waits
#: 5 s by default, and a handshake takes a few round trips.
HANDSHAKE_TIMEOUT = 10.0
#: Connections a server holds before their client is verified (about 100 KB each); an Initial
#: that would open one more is dropped (its client resends it). Handshakes on a LAN take
#: milliseconds, so only a flood fills this.
MAX_HALF_OPEN = 256


class Server:
    """A listening endpoint: `address` it is bound to, `refusals` counted by reason."""

    def __init__(
        self, endpoint: Endpoint, quic_server: QuicServer, address: tuple[str, int]
    ) -> None:
        self._endpoint = endpoint
        self._quic_server = quic_server
        self.address = address
        self.refusals: Counter[str] = endpoint.refusals

    @property
    def connections(self) -> list[Connection]:
        """The accepted connections that are still open."""
        found = (p.connection for p in self._endpoint.protocols)
        return [c for c in found if c is not None and not c.closed]

    def connections_of(self, node_id: str) -> int:
        """How many connections the identity `node_id` holds open to this server (Raft ones
        are not counted: per_identity.py)."""
        return self._endpoint.slots.count(node_id)

    @property
    def handshakes(self) -> int:
        """Connections whose client is not verified yet (at most `max_half_open`)."""
        return len(self._endpoint.half_open)

    def close(self) -> None:
        """Close every connection (handlers are cancelled) and stop listening."""
        for protocol in list(self._endpoint.protocols):
            protocol.shut("server closing")
            protocol.streams.cancel_handlers()
        self._quic_server.close()


async def serve(
    host: str,
    port: int,
    identity: Identity,
    handlers: Mapping[str, Handler],
    admit: Admit | None = None,
    on_connection: Callable[[Connection], None] | None = None,
    *,
    max_frame: int = MAX_FRAME,
    idle_timeout: float = IDLE_TIMEOUT,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    max_half_open: int = MAX_HALF_OPEN,
    max_per_identity: int = 0,
) -> Server:
    """Listen on host:port (port 0: any free port, see Server.address) for the ALPNs in
    `handlers`; `admit(peer, alpn)` may refuse a verified peer by returning a reason.
    `max_per_identity` bounds the connections one identity may hold open from one host (0:
    no bound; Raft connections are not counted, per_identity.py)."""
    private.check()
    if not handlers:
        raise ValueError("serve() needs at least one ALPN handler")
    slots = IdentitySlots(max_per_identity)
    endpoint = Endpoint(
        identity=identity,
        ca=identity.ca_certificate(),
        handlers=dict(handlers),
        max_frame=max_frame,
        keepalive=idle_timeout / 3,
        admit=admit,
        on_connection=on_connection,
        handshake_timeout=handshake_timeout,
        slots=slots,
    )
    config = _configuration(identity, sorted(handlers), idle_timeout, max_frame, is_client=False)

    def configure(client: tuple[Any, ...]) -> QuicConfiguration:
        return path.sized_for(config, str(client[0]))

    def may_open(client: tuple[Any, ...]) -> bool:
        if len(endpoint.half_open) < max_half_open:
            return True
        endpoint.refusals["too_many_handshakes"] += 1  # Initial datagrams dropped
        return False

    def create_protocol(quic: QuicConnection, stream_handler: object = None) -> PeerProtocol:
        private.request_client_certificate(quic)
        private.delay_acks(quic)
        return PeerProtocol(quic, endpoint=endpoint, dialed=False)

    # aioquic's serve() is a thin wrapper around exactly this call; making it ourselves gives us
    # the UDP transport, and so the bound address when port is 0.
    loop = asyncio.get_running_loop()
    try:
        transport, quic_server = await loop.create_datagram_endpoint(
            lambda: private.PerClientConfigServer(
                configure=configure,
                may_open=may_open,
                configuration=config,
                create_protocol=create_protocol,
            ),
            local_addr=(host, port),
        )
    except OSError as err:
        raise TransportError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    read_in_batches(transport, quic_server)
    sockname = transport.get_extra_info("sockname")
    return Server(endpoint, quic_server, (str(sockname[0]), int(sockname[1])))


async def connect(
    host: str,
    port: int,
    identity: Identity,
    alpn: str,
    *,
    expect_node_id: str | None = None,
    handlers: Mapping[str, Handler] | None = None,
    timeout: float = 5,
    max_frame: int = MAX_FRAME,
    idle_timeout: float = IDLE_TIMEOUT,
) -> Connection:
    """Dial host:port on `alpn`; the server must be a node of our cluster (and `expect_node_id`
    if given). `handlers` serve streams the server opens. Returns once the server accepted us."""
    endpoint = Endpoint(
        identity=identity,
        ca=identity.ca_certificate(),
        handlers=dict(handlers or {}),
        max_frame=max_frame,
        keepalive=idle_timeout / 3,
        expect_node_id=expect_node_id,
    )
    config = _configuration(identity, [alpn], idle_timeout, max_frame, is_client=True)
    loop = asyncio.get_running_loop()
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    transport: asyncio.BaseTransport | None = None
    protocol: PeerProtocol | None = None
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            family, addr = infos[0][0], infos[0][4]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.connect(addr)
            except OSError:
                sock.close()
                raise
            quic = private.ReadPacedQuicConnection(
                configuration=path.sized_for(config, str(addr[0]))
            )
            private.delay_acks(quic)
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: PeerProtocol(quic, endpoint=endpoint, dialed=True), sock=sock
            )
            read_in_batches(transport, protocol)
            protocol.remote = (str(addr[0]), int(addr[1]))
            protocol.connect(addr)
            return await protocol.established
    except TimeoutError:
        _abandon(protocol, transport, "timed out")
        raise TransportError(f"timed out after {timeout:g}s connecting to {where}") from None
    except OSError as err:
        _abandon(protocol, transport, "unreachable")
        raise TransportError(f"cannot reach {where}: {err.strerror or err}") from None
    except ValueError as err:  # getaddrinfo's UnicodeError for a name IDNA refuses ("a..b")
        _abandon(protocol, transport, "bad host")
        raise TransportError(f"cannot reach {where}: not a host name ({err})") from None
    except BaseException:  # refused, cancelled: leave nothing behind
        _abandon(protocol, transport, "connect failed")
        raise


def _abandon(
    protocol: PeerProtocol | None, transport: asyncio.BaseTransport | None, reason: str
) -> None:
    if protocol is not None:
        protocol.close(ErrorCode.NO_ERROR, reason)  # no-op if already closed
    if transport is not None:
        transport.close()


def _configuration(
    identity: Identity, alpns: list[str], idle_timeout: float, max_frame: int, *, is_client: bool
) -> QuicConfiguration:
    # The windows bound what a peer makes us hold unread (stream.receive_windows); they are
    # also well above aioquic's 1 MiB default, which would not fill a LAN with a snapshot.
    stream_window, connection_window = receive_windows(max_frame)
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=alpns,
        certificate=identity.certificate(),
        private_key=identity.private_key(),
        # Only the dialer's aioquic verifies the chain (the server's never does, see
        # _aioquic_private); verify.py then runs on both ends.
        cadata=identity.ca_pem if is_client else None,
        verify_mode=ssl.CERT_REQUIRED if is_client else None,
        server_name=None,
        idle_timeout=idle_timeout,
        max_data=connection_window,
        max_stream_data=stream_window,
    )
