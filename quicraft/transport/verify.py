"""Who may talk to us: the checks run on every peer certificate, as one pure function.

`verify_peer` sees only certificates, names and the clock; it does no I/O and keeps no state,
so every refusal reason is unit-tested without a network. quic.py calls it on both ends of
every connection once the TLS handshake has proved that the peer holds the certificate's key.

Rules, in the order they are checked (the first failure is the refusal):

1. the peer presented a certificate                              no_certificate
2. the ALPN is one of ours                                       unknown_alpn
3. it parses, and is a leaf signed directly by our cluster CA    bad_certificate, unknown_ca
4. it and our CA are valid now                                   not_yet_valid, expired
5. its subject O is our cluster, it has a CN and a known OU role  wrong_cluster, bad_certificate
6. a server is role node; a client has a role the ALPN allows     not_a_node, role_not_allowed
7. if the caller expects a node id, it is that one                wrong_node_id

Intermediate certificates are never trusted: our CAs sign leaves directly (pki.py), so
anything a peer sends after its leaf is ignored.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .pki import Role, is_ca, node_id_of, subject_field

ALPN_RAFT = "quicraft-raft/1"
ALPN_CLIENT = "quicraft-client/1"
ALPN_MGMT = "quicraft-mgmt/1"
ALPN_EVENTS = "quicraft-events/1"

#: The roles a *client* of each ALPN may have. The server side is always a node.
ALLOWED_ROLES: dict[str, frozenset[Role]] = {
    ALPN_RAFT: frozenset({Role.NODE}),
    # readers connect too; the client service refuses their writes with "forbidden"
    ALPN_CLIENT: frozenset({Role.ADMIN, Role.CLIENT, Role.READER}),
    ALPN_MGMT: frozenset({Role.ADMIN}),
    ALPN_EVENTS: frozenset({Role.ADMIN, Role.CLIENT, Role.READER}),
}


@dataclass(frozen=True, slots=True)
class Peer:
    """The authenticated other end of a connection."""

    node_id: str  # fingerprint of its public key (pki.node_id_of)
    name: str  # subject CN
    role: Role  # subject OU
    cluster: str  # subject O
    address: tuple[str, int]  # where its packets come from (a hint, never an identity)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a peer is refused: a short stable `reason` (what is counted) and a `detail`."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def verify_peer(
    *,
    ca: x509.Certificate,
    certificate: x509.Certificate | None,
    cluster: str,
    alpn: str | None,
    peer_is_server: bool,
    address: tuple[str, int],
    expect_node_id: str | None = None,
    now: dt.datetime | None = None,
) -> Peer | Refusal:
    """Check a peer's leaf `certificate` against our cluster's `ca`; see the module rules."""
    if certificate is None:
        return Refusal("no_certificate", "the peer presented no certificate")
    if alpn not in ALLOWED_ROLES:
        return Refusal("unknown_alpn", f"no service for ALPN {alpn!r}")
    try:
        name = subject_field(certificate, NameOID.COMMON_NAME)
        who = f"{name!r} (id {node_id_of(certificate)})"
    except ValueError:  # cryptography parses the subject when asked: anyone may send junk
        return Refusal("bad_certificate", "the peer's certificate cannot be parsed")
    try:
        certificate.verify_directly_issued_by(ca)
    except Exception:  # ValueError (issuer), InvalidSignature, TypeError (key type): not ours
        return Refusal("unknown_ca", f"{who} is not signed by the CA of cluster {cluster!r}")
    if is_ca(certificate):
        return Refusal("bad_certificate", f"{who} is a CA certificate, not an identity")
    if not _for_tls(certificate):
        return Refusal("bad_certificate", f"{who} is not a certificate for TLS authentication")

    now = now or dt.datetime.now(dt.UTC)
    for cert, what in ((certificate, f"the certificate of {who}"), (ca, "the cluster CA")):
        if now < cert.not_valid_before_utc:
            start = f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
            return Refusal("not_yet_valid", f"{what} is not valid before {start}")
        if now > cert.not_valid_after_utc:
            end = f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            return Refusal("expired", f"{what} expired at {end}")

    their_cluster = subject_field(certificate, NameOID.ORGANIZATION_NAME)
    if their_cluster != cluster:
        return Refusal("wrong_cluster", f"{who} is of cluster {their_cluster!r}, not {cluster!r}")
    role_text = subject_field(certificate, NameOID.ORGANIZATIONAL_UNIT_NAME)
    role = next((r for r in Role if r.value == role_text), None)
    if name is None or role is None:
        return Refusal("bad_certificate", f"{who} has no single name (CN) and role (OU)")

    if peer_is_server:
        if role is not Role.NODE:
            return Refusal("not_a_node", f"server {who} has role {role.value}, not node")
    elif role not in ALLOWED_ROLES[alpn]:
        return Refusal("role_not_allowed", f"{who} has role {role.value}, not allowed on {alpn}")

    node_id = node_id_of(certificate)
    if expect_node_id is not None and node_id != expect_node_id:
        return Refusal("wrong_node_id", f"{who} is not the expected node {expect_node_id}")
    return Peer(node_id=node_id, name=name, role=role, cluster=cluster, address=address)


_TLS_PURPOSES = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def _for_tls(certificate: x509.Certificate) -> bool:
    """Every identity the CA issues (pki.sign_leaf) may sign, for TLS servers and clients;
    a certificate it made for anything else is not one."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        purposes = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return usage.digital_signature and set(purposes) >= _TLS_PURPOSES
