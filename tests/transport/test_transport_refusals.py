"""Peers that must be refused: refused with a reason, logged, counted, and no handler runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio.client import connect as aioquic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from transport_helpers import Certs, eventually, garbled, run, trusting

from quicraft.transport import (
    ALPN_CLIENT,
    ALPN_MGMT,
    ALPN_RAFT,
    Connection,
    ErrorCode,
    Identity,
    Peer,
    RefusedError,
    Role,
    Server,
    Stream,
    TransportError,
    connect,
    serve,
)
from quicraft.transport.connection import termination_error
from quicraft.wire import encode_frame

NOW = dt.datetime.now(dt.UTC)


class Spy:
    """Handlers that record every call; a refused peer must never reach one."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def handle(self, conn: Connection, stream: Stream) -> None:
        self.calls.append(conn.peer.name)
        while (frame := await stream.read_frame()) is not None:
            stream.write_frame(frame)

    def handlers(self) -> dict[str, Any]:
        return {ALPN_RAFT: self.handle, ALPN_CLIENT: self.handle, ALPN_MGMT: self.handle}


async def refused(server: Server, me: Identity, alpn: str, **kwargs: Any) -> RefusedError:
    with pytest.raises(RefusedError) as caught:
        await connect("127.0.0.1", server.address[1], me, alpn, timeout=10, **kwargs)
    return caught.value


def impostor(certs: Certs, other_ca: Certs) -> Identity:
    """A key and certificate from another CA, but trusting ours (our CA cert is public)."""
    return trusting(other_ca.load("n3"), certs.load("n1"))


def mismatched(certs: Certs) -> Identity:
    """n2's certificate with n3's key: it cannot sign the handshake as n2."""
    return replace(certs.load("n2"), key_pem=certs.load("n3").key_pem)


def expired(certs: Certs) -> Identity:
    before, after = NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=1)
    return certs.craft("stale", Role.NODE, not_before=before, not_after=after)


# (who connects, on which ALPN) -> the reason the server counts
CASES: dict[str, tuple[Any, str, str]] = {
    "another CA": (impostor, ALPN_RAFT, "unknown_ca"),
    "another cluster name": (
        lambda c, o: c.craft("n7", Role.NODE, cluster="c2"),
        ALPN_RAFT,
        "wrong_cluster",
    ),
    "reader on raft": (lambda c, o: c.load("rd"), ALPN_RAFT, "role_not_allowed"),
    "client on raft": (lambda c, o: c.load("cl"), ALPN_RAFT, "role_not_allowed"),
    "admin on raft": (lambda c, o: c.load("admin"), ALPN_RAFT, "role_not_allowed"),
    "reader on mgmt": (lambda c, o: c.load("rd"), ALPN_MGMT, "role_not_allowed"),
    "client on mgmt": (lambda c, o: c.load("cl"), ALPN_MGMT, "role_not_allowed"),
    "expired certificate": (lambda c, o: expired(c), ALPN_RAFT, "expired"),
    "certificate without its key": (lambda c, o: mismatched(c), ALPN_RAFT, "tls_decrypt_error"),
    # found by an audit: verify_peer raised, so the peer was neither refused nor counted
    "certificate that does not parse": (
        lambda c, o: garbled(c.load("cl")),
        ALPN_CLIENT,
        "bad_certificate",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_by_the_server(
    certs: Certs, other_ca: Certs, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    make, alpn, reason = CASES[case]
    me = make(certs, other_ca)
    spy = Spy()

    async def main() -> None:
        server = await serve("127.0.0.1", 0, certs.load("n1"), spy.handlers())
        error = await refused(server, me, alpn)
        assert error.reason == reason, error
        await eventually(lambda: server.refusals == {reason: 1})
        server.close()

    with caplog.at_level(logging.WARNING, logger="quicraft.transport"):
        run(main())
    assert spy.calls == []
    assert any(reason in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_removed_member_is_refused_by_admit(certs: Certs) -> None:
    n2, n3 = certs.load("n2"), certs.load("n3")
    spy = Spy()
    asked: list[tuple[str, str]] = []

    def admit(peer: Peer, alpn: str) -> str | None:
        asked.append((peer.name, alpn))
        return "not a member of the cluster" if peer.node_id == n3.node_id else None

    async def main() -> None:
        server = await serve("127.0.0.1", 0, certs.load("n1"), spy.handlers(), admit=admit)
        error = await refused(server, n3, ALPN_RAFT)
        assert error.reason == "not_admitted"
        assert "not a member of the cluster" in str(error)
        ok = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT)
        stream = await ok.open_stream()
        stream.write_frame(b"hello")
        assert await stream.read_frame() == b"hello"
        assert server.refusals == {"not_admitted": 1}
        ok.close()
        await ok.wait_closed()
        server.close()

    run(main())
    assert asked == [("n3", ALPN_RAFT), ("n2", ALPN_RAFT)]
    assert spy.calls == ["n2"]


def test_a_crashing_admit_refuses(certs: Certs) -> None:
    def admit(peer: Peer, alpn: str) -> str | None:
        raise RuntimeError("membership unavailable")

    async def main() -> None:
        server = await serve("127.0.0.1", 0, certs.load("n1"), Spy().handlers(), admit=admit)
        error = await refused(server, certs.load("n2"), ALPN_RAFT)
        assert error.reason == "not_admitted"
        server.close()

    run(main())


def test_the_dialer_refuses_a_wrong_server(certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    n1, n2, n3 = certs.load("n1"), certs.load("n2"), certs.load("n3")
    spy = Spy()

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, spy.handlers())
        error = await refused(server, n2, ALPN_RAFT, expect_node_id=n3.node_id)
        assert error.reason == "wrong_node_id"
        assert n3.node_id in str(error)
        # a server that is not a node (a client key serving) is refused by every dialer
        fake = await serve("127.0.0.1", 0, certs.load("cl"), spy.handlers())
        assert (await refused(fake, n2, ALPN_RAFT)).reason == "not_a_node"
        server.close()
        fake.close()

    with caplog.at_level(logging.WARNING, logger="quicraft.transport"):
        run(main())
    assert spy.calls == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("refused the server" in m and "wrong_node_id" in m for m in messages)


def test_a_check_that_raises_refuses(
    certs: Certs, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail closed. Found by an audit: a certificate whose subject did not parse made
    verify_peer raise, and the client was neither refused nor accepted. Its dialer's PING was
    acknowledged (so connect() returned) and the server held its streams without bound."""
    from quicraft.transport import verify_peer

    def failing(**kwargs: Any) -> Any:
        if not kwargs["peer_is_server"]:
            raise RuntimeError("a bug in a check")
        return verify_peer(**kwargs)

    monkeypatch.setattr("quicraft.transport.connection.verify_peer", failing)
    spy = Spy()

    async def main() -> None:
        server = await serve("127.0.0.1", 0, certs.load("n1"), spy.handlers())
        error = await refused(server, certs.load("cl"), ALPN_CLIENT)
        assert error.reason == "bad_certificate"
        assert error.detail == "its certificate could not be checked"
        await eventually(lambda: server.refusals == {"bad_certificate": 1})
        server.close()

    with caplog.at_level(logging.ERROR, logger="quicraft.transport"):
        run(main())
    assert spy.calls == []
    assert any("checking the certificate of" in r.getMessage() for r in caplog.records)


def test_a_dialer_that_does_not_trust_our_ca(certs: Certs, other_ca: Certs) -> None:
    spy = Spy()
    stranger = other_ca.load("n2")  # another CA's node: it cannot verify our server

    async def main() -> None:
        server = await serve("127.0.0.1", 0, certs.load("n1"), spy.handlers())
        error = await refused(server, stranger, ALPN_RAFT)
        assert error.reason == "tls_bad_certificate"
        assert "not of the same CA: give every node and client a copy" in str(error)
        # the server counts the failed handshake as well
        await eventually(lambda: server.refusals == {"tls_bad_certificate": 1})
        server.close()

    run(main())
    assert spy.calls == []


#: A program that dials a server of another CA; argv: the certs folder of both CAs, and
#: "configured" to set up logging first.
DIAL_ANOTHER_CA = """
import asyncio, logging, sys
from pathlib import Path
from quicraft.transport import ALPN_CLIENT, RefusedError, connect, load_identity, serve

if sys.argv[2:] == ["configured"]:
    logging.basicConfig(level=logging.WARNING)
ours, theirs = Path(sys.argv[1]) / "ours", Path(sys.argv[1]) / "theirs"

async def handle(conn, stream):
    pass

async def main():
    server = await serve("127.0.0.1", 0, load_identity(ours, "c1", "n1"), {ALPN_CLIENT: handle})
    try:
        await connect("127.0.0.1", server.address[1], load_identity(theirs, "c1", "cl"),
                      ALPN_CLIENT, timeout=10)
    except RefusedError as err:
        print(err.reason)
    await asyncio.sleep(0.2)  # the server's side of the handshake ends too
    server.close()

asyncio.run(main())
"""


@pytest.mark.parametrize("logging_set_up", [False, True])
def test_a_tls_refusal_prints_nothing_in_a_program_without_logging(
    certs: Certs, other_ca: Certs, tmp_path: Path, logging_set_up: bool
) -> None:
    """aioquic's own line ("[...] Error: 298, reason: unable to get local issuer
    certificate") reached stderr through Python's last-resort handler; the RefusedError
    already says it. A program that configured logging still gets the line."""
    (tmp_path / "ours").symlink_to(certs.root)
    (tmp_path / "theirs").symlink_to(other_ca.root)
    argv = [sys.executable, "-c", DIAL_ANOTHER_CA, str(tmp_path)]
    done = subprocess.run(
        [*argv, "configured"] if logging_set_up else argv, capture_output=True, text=True
    )
    assert done.stdout == "tls_bad_certificate\n", done.stderr
    if logging_set_up:
        assert "WARNING:quic:" in done.stderr and "Error: 298" in done.stderr
    else:
        assert done.stderr == ""


class Recorder(QuicConnectionProtocol):
    """A bare aioquic client protocol that remembers how its connection ended."""

    ended: events.ConnectionTerminated | None = None

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.ConnectionTerminated):
            self.ended = event
        super().quic_event_received(event)


async def raw_client(
    port: int, alpn: str, identity: Identity | None
) -> events.ConnectionTerminated:
    """Connect with aioquic directly (optionally with no certificate at all), write a frame
    the moment the handshake is done, and report how the server ended the connection."""
    config = QuicConfiguration(is_client=True, alpn_protocols=[alpn], verify_mode=ssl.CERT_NONE)
    if identity is not None:
        config.certificate = identity.certificate()
        config.private_key = identity.private_key()
    async with aioquic_connect(
        "127.0.0.1", port, configuration=config, create_protocol=Recorder
    ) as client:
        assert isinstance(client, Recorder)
        _, writer = await client.create_stream()
        writer.write(encode_frame(b"let me in"))
        await asyncio.wait_for(client.wait_closed(), 5)
        assert client.ended is not None
        return client.ended


@pytest.mark.parametrize(("name", "reason"), [(None, "no_certificate"), ("rd", "role_not_allowed")])
def test_early_stream_data_of_a_refused_client_never_reaches_a_handler(
    certs: Certs, name: str | None, reason: str
) -> None:
    spy = Spy()

    async def main() -> None:
        server = await serve("127.0.0.1", 0, certs.load("n1"), spy.handlers())
        identity = certs.load(name) if name else None
        ended = await raw_client(server.address[1], ALPN_RAFT, identity)
        assert ended.error_code == ErrorCode.REFUSED and ended.frame_type is None
        assert ended.reason_phrase.startswith(f"{reason}: ")
        assert server.refusals == {reason: 1}
        await asyncio.sleep(0.1)
        server.close()

    run(main())
    assert spy.calls == []


def test_an_alpn_the_server_does_not_serve(certs: Certs) -> None:
    async def main() -> None:
        server = await serve("127.0.0.1", 0, certs.load("n1"), {ALPN_RAFT: Spy().handle})
        with pytest.raises(TransportError) as caught:
            await connect("127.0.0.1", server.address[1], certs.load("cl"), ALPN_CLIENT)
        assert isinstance(caught.value, RefusedError)
        assert caught.value.reason == "tls_no_application_protocol"
        server.close()

    run(main())


@pytest.mark.parametrize(
    ("frame_type", "code"),
    [(None, ErrorCode.REFUSED), (None, 0x7), (0x0, 0x0A), (0x0, 0x100 + 42)],
    ids=["refused", "app-close", "transport-close", "tls-alert"],
)
def test_a_peers_close_reason_reaches_errors_without_control_characters(
    frame_type: int | None, code: int
) -> None:
    """Anyone may close a connection with any reason phrase, even in its first Initial packet
    (found by an audit): errors repeat it, and the CLI prints errors, so an escape sequence or
    a newline in it would reach a terminal or forge a log line."""
    hostile = "\x1b[2J\x1b[31mpwned\nquicraft: fake line\u202e" + "x" * 1000
    event = events.ConnectionTerminated(
        error_code=code, frame_type=frame_type, reason_phrase=hostile
    )
    message = str(termination_error(event, "10.0.0.1:7400"))
    assert "pwned" in message  # the reason is still shown ...
    assert message.isprintable() and "\x1b" not in message  # ... but only as text
    assert len(message) < 400
