"""Talk to a quicraft cluster from Python: `connect(...)` (async) or `connect_sync(...)`."""

from .client import Client, ClientError, connect
from .kv import KV
from .sync import SyncClient, SyncKV, connect_sync

__all__ = ["KV", "Client", "ClientError", "SyncClient", "SyncKV", "connect", "connect_sync"]
