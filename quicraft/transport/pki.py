"""Certificates as values: roles, node ids, and how a cluster CA and its leaves are made.

No files here (identity.py owns the directory layout) and no policy about who may talk to whom
(verify.py owns that). Rules:

- Keys are ECDSA P-256: small, fast to sign, and accepted by aioquic's TLS 1.3 on both sides.
- A leaf says who it is in its subject: CN = name, O = cluster, OU = role. Leaves are signed
  directly by the cluster CA; there are no intermediates, so a chain is always CA -> leaf.
- A node id is a fingerprint of the public key, not of the certificate, so re-issuing a
  certificate for the same key keeps the id (an identity is its key).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = dt.timedelta(days=3652)  # ~10 years: a cluster rarely outlives its CA on purpose
LEAF_LIFETIME = dt.timedelta(days=730)  # ~2 years
# Certificates start a little in the past so that a peer whose clock is slightly behind ours
# does not see a brand-new certificate as "not yet valid".
BACKDATE = dt.timedelta(minutes=5)


class Role(enum.Enum):
    """What a key may do; stored as the subject OU of its certificate."""

    NODE = "node"  # a cluster member: speaks Raft
    ADMIN = "admin"  # everything, management included
    CLIENT = "client"  # key-value reads and writes, events
    READER = "reader"  # key-value reads, events (no writes, no management)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def node_id_of(cert: x509.Certificate | bytes) -> str:
    """16 hex chars of SHA-256 over the certificate's SubjectPublicKeyInfo (DER); PEM accepted."""
    if isinstance(cert, bytes):
        cert = x509.load_pem_x509_certificate(cert)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()[:16]


def subject_field(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    """The one value of a subject attribute, or None when absent or ambiguous (repeated)."""
    values = cert.subject.get_attributes_for_oid(oid)
    if len(values) != 1 or not isinstance(values[0].value, str):
        return None
    return values[0].value


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def make_ca(
    cluster: str, key: ec.EllipticCurvePrivateKey, now: dt.datetime | None = None
) -> x509.Certificate:
    """A self-signed CA for `cluster` that may sign leaves only (path length 0)."""
    now = now or dt.datetime.now(dt.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"quicraft CA {cluster}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def sign_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    *,
    cluster: str,
    name: str,
    role: Role,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """A leaf for `name` in `cluster` with `role`, usable as both TLS server and client.

    The dates are parameters so that tests can make expired or not-yet-valid certificates.
    By default a leaf ends with its CA at the latest: no peer accepts it once the CA expired.
    """
    now = dt.datetime.now(dt.UTC)
    not_before = not_before or now - BACKDATE
    not_after = not_after or min(now + LEAF_LIFETIME, ca_cert.not_valid_after_utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_ec_public(ca_cert)),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ec_public(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise TypeError("quicraft CAs use ECDSA keys")
    return public
