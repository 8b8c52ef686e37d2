"""Fakes for the client's tests that run without a node."""

from __future__ import annotations


class FakeConnection:
    """The connection under a Channel, as the client looks at it: always alive."""

    closed = False
    ended = False

    def silent_for(self) -> float:
        return 0.0

    def probe(self) -> None:
        pass

    def close(self, reason: str) -> None:
        self.closed = True
