"""Talk to a quicraft cluster from Python: `connect(...)` (async) or `connect_sync(...)`;
manage it with `connect_mgmt(...)` (async, admin role)."""

from quicraft.transport import IdentityError  # what connect* raise for a bad certs folder

from .client import Client, ClientError, InvalidRequest, connect
from .events import EventsCompacted
from .kv import KV
from .mgmt import MgmtClient, MgmtError, connect_mgmt
from .sync import SyncClient, SyncKV, connect_sync

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
