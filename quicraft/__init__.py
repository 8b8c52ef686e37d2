"""quicraft: Raft consensus over QUIC.

    async with quicraft.connect(endpoints=["127.0.0.1:7401"], cluster="c1") as c:
        await c.kv.set("key", b"value")

The client is imported on first use, so `quicraft.core` and `quicraft.sim` stay free of the
network stack. Type checkers see the real names through the TYPE_CHECKING import below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quicraft.client import (
        KV,
        Client,
        ClientError,
        EventsCompacted,
        IdentityError,
        InvalidRequest,
        MgmtClient,
        MgmtError,
        SyncClient,
        SyncKV,
        connect,
        connect_mgmt,
        connect_sync,
    )

__all__ = [
    "KV",
    "Client",
    "ClientError",
    "EventsCompacted",
    "IdentityError",
    "InvalidRequest",
    "MgmtClient",
    "MgmtError",
    "SyncClient",
    "SyncKV",
    "connect",
    "connect_mgmt",
    "connect_sync",
]


if not TYPE_CHECKING:  # hidden from type checkers, which would type every other name Any

    def __getattr__(name: str) -> Any:
        if name in __all__:
            from quicraft import client

            return getattr(client, name)
        raise AttributeError(f"module 'quicraft' has no attribute {name!r}")
