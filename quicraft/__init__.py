"""quicraft: Raft consensus over QUIC.

    async with quicraft.connect(endpoints=["127.0.0.1:7401"], cluster="c1") as c:
        await c.kv.set("key", b"value")

The client is imported on first use, so `quicraft.core` and `quicraft.sim` stay free of the
network stack.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ClientError", "MgmtError", "connect", "connect_mgmt", "connect_sync"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from quicraft import client

        return getattr(client, name)
    raise AttributeError(f"module 'quicraft' has no attribute {name!r}")
