"""The metrics HTTP server under connections that do not behave like Prometheus."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from quicraft.telemetry.metrics import MetricsServer

#: How long a test waits for the server to act; the server's own timeouts are far shorter.
PATIENCE_S = 10.0


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[MetricsServer]:
    """A server whose connections may stay silent `request.param` seconds, two at once."""
    metrics = MetricsServer("127.0.0.1", 0, "n1", timeout_s=request.param, max_connections=2)
    yield metrics
    metrics.close()


def _scrape(server: MetricsServer) -> str:
    host, port = server.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=PATIENCE_S) as answer:
        return str(answer.read().decode())


def _closed_by_server(conn: socket.socket) -> bool:
    """Whether the server ends `conn` (EOF or reset) while we wait and send nothing more."""
    conn.settimeout(PATIENCE_S)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("server", [0.3], indirect=True)
def test_a_connection_that_goes_silent_is_closed(
    server: MetricsServer, capfd: pytest.CaptureFixture[str]
) -> None:
    """Found by an audit: a connection that sent half a request (a scraper whose host went
    away, or anyone who connects and waits) held a thread of the node for as long as it
    stayed open; 800 such connections were 800 threads. It is closed quietly: no traceback
    on the node's stderr."""
    with socket.create_connection(server.address) as conn:
        conn.sendall(b"GET /metrics HTTP/1.1\r\n")  # and no more
        assert _closed_by_server(conn)
    assert "quicraft_leader_changes_total 0.0" in _scrape(server)  # still serving
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("server", [3 * PATIENCE_S], indirect=True)  # none times out here
def test_connections_past_the_limit_wait_for_a_free_one(server: MetricsServer) -> None:
    """Found by an audit: every connection got a thread of its own, without limit."""
    held = [socket.create_connection(server.address) for _ in range(2)]
    for conn in held:
        conn.sendall(b"GET")  # two being served: the limit of this server
    with socket.create_connection(server.address) as extra:
        extra.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        extra.settimeout(0.5)
        with pytest.raises(TimeoutError):  # it waits: no thread reads it yet
            extra.recv(1)
        held.pop().close()
        extra.settimeout(PATIENCE_S)
        assert extra.recv(12) == b"HTTP/1.0 200"
    held.pop().close()


def test_a_connection_waiting_for_a_slot_does_not_hold_up_closing() -> None:
    server = MetricsServer("127.0.0.1", 0, "n1", timeout_s=3 * PATIENCE_S, max_connections=2)
    held = [socket.create_connection(server.address) for _ in range(3)]  # the third waits
    try:
        for conn in held:
            conn.sendall(b"GET")
        held[2].settimeout(0.5)
        with pytest.raises(TimeoutError):  # by now the server has taken it, and waits
            held[2].recv(1)
        closing = threading.Thread(target=server.close)
        closing.start()
        closing.join(PATIENCE_S)
        assert not closing.is_alive()
    finally:
        for conn in held:
            conn.close()
