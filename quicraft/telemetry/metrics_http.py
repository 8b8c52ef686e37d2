"""The HTTP server that Prometheus scrapes: a thread per connection, as prometheus_client's,
but bounded, since anyone who reaches the port may connect.

prometheus_client's own server gives every connection a thread that waits for the request
for as long as the connection stays open: a scraper whose host vanished mid-scrape, or a
client that connects and sends nothing, held a thread for ever, and a few thousand of them
held a few thousand threads and file descriptors of the node's process. Here a connection
that stays silent for `timeout_s` is closed, and at most `max_connections` are served at
once: the next one waits for a free slot (`timeout_s` at most, then it is closed).
"""

from __future__ import annotations

import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app

#: How long a connection may stay silent (in each read or write) before it is closed.
#: Prometheus sends its request at once; 10 s is its default scrape timeout.
TIMEOUT_S = 10.0
#: Connections served at once: a few scrapers and a person with curl need far fewer.
MAX_CONNECTIONS = 16

log = logging.getLogger(__name__)


class _Handler(WSGIRequestHandler):
    server: MetricsHTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.timeout_s)  # each read and write of it

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per scrape would swamp the node's log


class MetricsHTTPServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a connection in progress never holds up the process's exit

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        timeout_s: float = TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ):
        # IPv6 or IPv4, as the address is (socketserver assumes IPv4).
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self.address_family = family
        self.timeout_s = timeout_s
        self._max_connections = max_connections
        self._serving = 0  # connections with a thread
        self._closing = False
        self._slot_freed = threading.Condition()
        super().__init__((str(sockaddr[0]), int(sockaddr[1])), _Handler)
        self.set_app(make_wsgi_app(registry))

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._take_slot():
            log.debug("metrics: closed a connection from %s: too many at once", client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (too many threads in the process)
            self._free_slot()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._free_slot()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback on stderr; a client that went silent (timed out)
        # or hung up is no error of the node's.
        log.debug("metrics: request from %s failed", client_address, exc_info=True)

    def shutdown(self) -> None:
        with self._slot_freed:  # the accept loop may be waiting for a slot
            self._closing = True
            self._slot_freed.notify_all()
        super().shutdown()

    def _take_slot(self) -> bool:
        """Wait until fewer than max_connections are served (the next connections wait in
        the listening socket's backlog meanwhile): False if that took too long, or the
        server is closing."""
        with self._slot_freed:
            free = self._slot_freed.wait_for(
                lambda: self._serving < self._max_connections or self._closing, self.timeout_s
            )
            if not free or self._closing:
                return False
            self._serving += 1
            return True

    def _free_slot(self) -> None:
        with self._slot_freed:
            self._serving -= 1
            self._slot_freed.notify()
