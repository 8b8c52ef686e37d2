"""Identities on disk: a cluster's CA and the keys it signs, under DIR/CLUSTER/.

Layout: DIR/CLUSTER/ca.crt, ca.key (the CA: whoever holds ca.key can admit anyone), and one
NAME.crt + NAME.key per node or client (`init_cluster` also issues "admin"). Rules:

- A private key file is created with mode 0600 by the call that creates it (os.open with
  O_CREAT|O_EXCL and the mode), never chmod-ed afterwards, so it is never readable by others,
  not even for an instant. O_EXCL also makes "never overwrite" atomic and refuses symlinks.
- Nothing that exists is ever overwritten: losing a CA key or a node key loses an identity.
- Keys are never logged or put in a repr.
- Every failure is an IdentityError whose message is one line an operator can act on.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from .pki import Role, cert_pem, key_pem, make_ca, new_key, node_id_of, sign_leaf, subject_field

__all__ = [
    "Identity",
    "IdentityError",
    "Role",
    "check_name",
    "identity_exists",
    "init_cluster",
    "issue",
    "load_identity",
    "node_id_of",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RESERVED = {"ca"}  # would collide with the CA's own files


class IdentityError(Exception):
    """A CA or identity that cannot be created or loaded; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who we are: our certificate and key, and the CA of our cluster (all PEM)."""

    cluster: str
    name: str
    role: Role
    node_id: str
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    ca_pem: bytes = field(repr=False)

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_pem)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError(f"the key of {self.name!r} is not an ECDSA key")
        return key


def init_cluster(certs_dir: Path, cluster: str) -> Path:
    """Create DIR/CLUSTER/ with a new CA and an "admin" identity; returns that folder."""
    folder = _folder(certs_dir, cluster)
    for path in (folder / "ca.crt", folder / "ca.key", folder / "admin.crt", folder / "admin.key"):
        if path.exists():
            raise IdentityError(f"{path} already exists: refusing to overwrite cluster {cluster!r}")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = new_key()
    ca = make_ca(cluster, key)
    _create(folder / "ca.key", key_pem(key), 0o600)
    _create(folder / "ca.crt", cert_pem(ca), 0o644)
    issue(certs_dir, cluster, "admin", Role.ADMIN)
    return folder


def issue(certs_dir: Path, cluster: str, name: str, role: Role) -> Path:
    """Make a key for `name`, sign it with the cluster CA; returns the path of NAME.crt."""
    folder = _folder(certs_dir, cluster)
    check_name(name, "name")
    crt, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    for path in (crt, key_path):
        if path.exists():
            raise IdentityError(f"{path} already exists: refusing to overwrite identity {name!r}")
    ca = _load_cert(folder / "ca.crt", cluster)
    ca_key = _load_key(folder / "ca.key", cluster)
    key = new_key()
    leaf = sign_leaf(ca, ca_key, key.public_key(), cluster=cluster, name=name, role=role)
    _create(key_path, key_pem(key), 0o600)
    _create(crt, cert_pem(leaf), 0o644)
    return crt


def identity_exists(certs_dir: Path, cluster: str, name: str) -> bool:
    folder = _folder(certs_dir, cluster)
    return (folder / f"{name}.crt").exists() and (folder / f"{name}.key").exists()


def load_identity(certs_dir: Path, cluster: str, name: str) -> Identity:
    """Read NAME's certificate and key and the cluster CA, and check that they belong together."""
    folder = _folder(certs_dir, cluster)
    check_name(name, "name")
    ca_path, crt_path, key_path = folder / "ca.crt", folder / f"{name}.crt", folder / f"{name}.key"
    ca = _load_cert(ca_path, cluster)
    cert = _load_cert(crt_path, cluster)
    key = _load_key(key_path, cluster)
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise IdentityError(f"{key_path} is not the key of the certificate {crt_path}")
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as err:  # ValueError, InvalidSignature, TypeError: all mean "not ours"
        raise IdentityError(f"{crt_path} is not signed by the CA in {ca_path}") from err
    if subject_field(cert, NameOID.ORGANIZATION_NAME) != cluster:
        raise IdentityError(f"{crt_path} belongs to another cluster than {cluster!r}")
    if subject_field(cert, NameOID.COMMON_NAME) != name:
        raise IdentityError(f"{crt_path} was issued to another name than {name!r}")
    try:
        role = Role(subject_field(cert, NameOID.ORGANIZATIONAL_UNIT_NAME))
    except ValueError:
        raise IdentityError(f"{crt_path} has no valid role (subject OU)") from None
    if dt.datetime.now(dt.UTC) > cert.not_valid_after_utc:
        raise IdentityError(
            f"{crt_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}: issue a new identity"
        )
    return Identity(
        cluster=cluster,
        name=name,
        role=role,
        node_id=node_id_of(cert),
        cert_pem=cert_pem(cert),
        key_pem=key_pem(key),
        ca_pem=cert_pem(ca),
    )


# -- files -----------------------------------------------------------------------------------


def _folder(certs_dir: Path, cluster: str) -> Path:
    check_name(cluster, "cluster name")
    return Path(certs_dir) / cluster


def check_name(name: str, what: str) -> None:
    """Refuse a cluster or identity name that could not be a file name in --certs."""
    if not _NAME.fullmatch(name) or name in _RESERVED:
        raise IdentityError(
            f"bad {what} {name!r}: use 1-64 letters, digits, '.', '_' or '-' (not 'ca')"
        )


def _create(path: Path, data: bytes, mode: int) -> None:
    """Write a new file that must not exist, with `mode` from its creation on."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise IdentityError(f"{path} already exists: refusing to overwrite it") from None
    except OSError as err:
        raise IdentityError(f"cannot create {path}: {err.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read(path: Path, cluster: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if path.name == "ca.key" and path.with_name("ca.crt").exists():
            # The CA exists, its key is kept elsewhere (as it may well be): certs init
            # would refuse to make a second CA.
            hint = (
                "this folder has the cluster's CA certificate but not its key; issue keys "
                "where ca.key is kept (`quicraft certs issue`) and copy them here"
            )
        elif path.name.startswith("ca."):
            hint = f"create the cluster's CA with `quicraft certs init --cluster {cluster}`"
        else:
            hint = "issue it with `quicraft certs issue`"
        raise IdentityError(f"{path} is missing: {hint}") from None
    except OSError as err:
        raise IdentityError(f"cannot read {path}: {err.strerror}") from None


def _load_cert(path: Path, cluster: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, cluster))
    except ValueError:
        raise IdentityError(f"{path} is not a PEM certificate") from None


def _load_key(path: Path, cluster: str) -> ec.EllipticCurvePrivateKey:
    """A private key, refused when other users may read it (the CA's key admits anyone)."""
    if os.name == "posix" and path.is_file() and path.stat().st_mode & 0o077:
        mode = oct(path.stat().st_mode & 0o777)
        raise IdentityError(f"{path} is readable by other users (mode {mode}): chmod 600 it")
    try:
        key = serialization.load_pem_private_key(_read(path, cluster), password=None)
    except (ValueError, TypeError):
        raise IdentityError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{path} is not an ECDSA key")
    return key


def _spki(public: CertificatePublicKeyTypes) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
