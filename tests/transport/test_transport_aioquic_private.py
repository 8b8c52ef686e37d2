"""The aioquic internals we rely on: if an aioquic upgrade moves them, these tests fail loudly.

The handshakes here run two aioquic connections against each other in memory, with no sockets.
"""

from __future__ import annotations

import ast
import inspect
import ssl

import pytest
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
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


def handshake(
    server_id: Identity, client_id: Identity, *, ask: bool
) -> tuple[QuicConnection, QuicConnection]:
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN_RAFT],
            certificate=client_id.certificate(),
            private_key=client_id.private_key(),
            cadata=client_id.ca_pem,
            verify_mode=ssl.CERT_REQUIRED,
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
        ),
        original_destination_connection_id=header.destination_cid,
    )
    if ask:
        private.request_client_certificate(server)
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
