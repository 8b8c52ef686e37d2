"""quicraft.transport: identities, and mutually authenticated QUIC between nodes and clients.

Modules (the public API is what this package exports):

    identity          the CA and identities on disk (DIR/CLUSTER/NAME.crt, .key)
    pki               certificates as values: roles, node ids, making CAs and leaves
    verify            the checks every peer certificate must pass, as one pure function
    quic              serve() and connect()
    connection        one connection: authentication, stream dispatch, keepalive
    per_identity      how many connections one verified identity may hold open to a server
    stream            one stream of length-prefixed frames
    address           HOST:PORT parsing
    deadlines         one timer that fails pending futures at their deadlines
    _aioquic_private  the only place that touches aioquic's private attributes

Exceptions:

    TransportError      unreachable, timed out, connection or stream lost
    └── RefusedError    authentication or admission failed (either end refused the other)
    IdentityError       a CA or identity that cannot be created or loaded
"""

from .errors import ErrorCode, RefusedError, TransportError
from .identity import (
    Identity,
    IdentityError,
    Role,
    check_name,
    identity_exists,
    init_cluster,
    issue,
    load_identity,
    node_id_of,
)
from .quic import (
    ALPN_CLIENT,
    ALPN_EVENTS,
    ALPN_MGMT,
    ALPN_RAFT,
    Admit,
    Connection,
    Handler,
    Server,
    connect,
    serve,
)
from .stream import Stream
from .verify import ALLOWED_ROLES, Peer, Refusal, verify_peer

__all__ = [
    "ALLOWED_ROLES",
    "ALPN_CLIENT",
    "ALPN_EVENTS",
    "ALPN_MGMT",
    "ALPN_RAFT",
    "Admit",
    "Connection",
    "ErrorCode",
    "Handler",
    "Identity",
    "IdentityError",
    "Peer",
    "Refusal",
    "RefusedError",
    "Role",
    "Server",
    "Stream",
    "TransportError",
    "check_name",
    "connect",
    "identity_exists",
    "init_cluster",
    "issue",
    "load_identity",
    "node_id_of",
    "serve",
    "verify_peer",
]
