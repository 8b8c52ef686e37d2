"""Identities on disk: a cluster's CA and the keys it signs, under DIR/CLUSTER/.

Layout: DIR/CLUSTER/ca.crt, ca.key (the CA: whoever holds ca.key can admit anyone), and one
NAME.crt + NAME.key per node or client (`init_cluster` also issues "admin"). Rules:

- A private key file is created with mode 0600 by the call that creates it (os.open with
  O_CREAT|O_EXCL and the mode), never chmod-ed afterwards, so it is never readable by others,
  not even for an instant. O_EXCL also makes "never overwrite" atomic and refuses symlinks.
- Nothing that exists is ever overwritten: losing a CA key or a node key loses an identity.
- A call that fails writes nothing: every check comes first, and the files a call made before
  a write failed are removed again (no half an identity, no orphan ca.key).
- Only regular files are read (a FIFO would hang, /dev/zero never end), at most MAX_PEM bytes.
- What decides whom this node trusts and who it is must be this user's alone: DIR/CLUSTER/ and
  ca.crt writable by nobody else, a key readable by nobody else, and all three owned by this
  user or root (docs/security.md says why, and why root may use another user's files).
- Keys are never logged or put in a repr.
- Every failure is an IdentityError whose message is one line an operator can act on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import stat
from collections.abc import Iterator
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
#: Where `quicraft local` keeps its clusters' keys (cli/local.py), relative to where it runs.
LOCAL_CERTS = Path(".quicraft-local/certs")
#: A key or certificate is under 1 KiB: a bigger file is not one, so it is not read whole.
MAX_PEM = 64 * 1024


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
        if os.path.lexists(path):  # a dangling symlink too: O_EXCL would refuse it anyway
            raise IdentityError(f"{path} already exists: refusing to overwrite cluster {cluster!r}")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        blocker = _not_a_directory(folder)
        why = f"{blocker} is not a directory" if blocker else err.strerror
        raise IdentityError(f"cannot write in {folder}: {why}") from None
    _check_folder(folder)
    key = new_key()
    ca = make_ca(cluster, key)
    with _all_or_nothing() as made:
        _create(folder / "ca.key", key_pem(key), 0o600, made)
        _create(folder / "ca.crt", cert_pem(ca), 0o644, made)
        issue(certs_dir, cluster, "admin", Role.ADMIN)
    return folder


def issue(certs_dir: Path, cluster: str, name: str, role: Role) -> Path:
    """Make a key for `name`, sign it with the cluster CA; returns the path of NAME.crt.

    Refused, with nothing written, unless ca.key is the key of ca.crt and the CA is valid
    now. The certificate ends no later than the CA (after that, no peer would accept it)."""
    folder = _folder(certs_dir, cluster)
    check_name(name, "name")
    crt, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    _check_halves(crt, key_path)
    for path in (crt, key_path):
        if os.path.lexists(path):
            if not os.path.exists(path):
                raise IdentityError(
                    f"{path} is a symlink to a missing file: restore that file, or delete the "
                    "symlink to issue a new identity"
                )
            raise IdentityError(f"{path} already exists: refusing to overwrite identity {name!r}")
    _check_folder(folder)
    ca, ca_key = _load_ca(folder, cluster)
    key = new_key()
    leaf = sign_leaf(ca, ca_key, key.public_key(), cluster=cluster, name=name, role=role)
    with _all_or_nothing() as made:
        _create(key_path, key_pem(key), 0o600, made)
        _create(crt, cert_pem(leaf), 0o644, made)
    return crt


def identity_exists(certs_dir: Path, cluster: str, name: str) -> bool:
    """True when NAME.crt and NAME.key are both there, False when neither is; IdentityError
    when only one is (a dangling symlink counts as missing), saying which and what to do."""
    folder = _folder(certs_dir, cluster)
    check_name(name, "name")
    crt, key = folder / f"{name}.crt", folder / f"{name}.key"
    _check_halves(crt, key)
    return os.path.exists(crt)


def load_identity(certs_dir: Path, cluster: str, name: str) -> Identity:
    """Read NAME's certificate and key and the cluster CA, and check that they belong together."""
    folder = _folder(certs_dir, cluster)
    check_name(name, "name")
    ca_path, crt_path, key_path = folder / "ca.crt", folder / f"{name}.crt", folder / f"{name}.key"
    if not os.path.lexists(folder):
        raise IdentityError(_no_cluster(Path(certs_dir), cluster))
    _check_folder(folder)
    ca = _load_ca_cert(ca_path, cluster)
    _check_halves(crt_path, key_path)
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
    _check_dates(cert, crt_path, "issue a new identity")
    return Identity(
        cluster=cluster,
        name=name,
        role=role,
        node_id=node_id_of(cert),
        cert_pem=cert_pem(cert),
        key_pem=key_pem(key),
        ca_pem=cert_pem(ca),
    )


# -- checks ----------------------------------------------------------------------------------


def _folder(certs_dir: Path, cluster: str) -> Path:
    check_name(cluster, "cluster name")
    return Path(certs_dir) / cluster


def check_name(name: str, what: str) -> None:
    """IdentityError unless `name` may name a cluster or an identity (a file name in DIR)."""
    if not _NAME.fullmatch(name) or name in _RESERVED:
        raise IdentityError(
            f"bad {what} {name!r}: use 1-64 letters, digits, '.', '_' or '-' (not 'ca')"
        )


def _check_folder(folder: Path) -> None:
    """DIR/CLUSTER/ is a directory that is ours (or root's) and that nobody else may write in:
    whoever can, can put their own CA in place of ca.crt, or their own key pair in place of a
    node's."""
    try:
        status = folder.stat()
    except FileNotFoundError:
        return  # reading ca.crt says what to do
    except OSError as err:
        blocker = _not_a_directory(folder)
        if blocker:
            raise IdentityError(f"{blocker} is not a directory") from None
        raise IdentityError(f"cannot read {folder}: {err.strerror}") from None
    mode = status.st_mode
    if not stat.S_ISDIR(mode):
        raise IdentityError(f"{folder} is not a directory")
    if mode & 0o022:
        raise IdentityError(
            f"{folder} is writable by other users (mode {oct(stat.S_IMODE(mode))}): "
            f"chmod go-w {folder}"
        )
    _check_owner(folder, status.st_uid, "its owner can put another CA or key pair in it")


def _check_owner(path: Path, owner: int, why: str) -> None:
    """Refuse `path` when another user than us or root owns it: its owner may change it,
    whatever its mode. Root may use anyone's files (it can change them all anyway)."""
    me = os.geteuid()
    if me != 0 and owner not in (me, 0):
        raise IdentityError(f"{path} belongs to another user (uid {owner}): {why}")


def _not_a_directory(path: Path) -> Path | None:
    """The first of `path` and its parents that exists but is not a directory."""
    for where in (path, *path.parents):
        if os.path.lexists(where) and not where.is_dir():
            return where
    return None


def _check_halves(crt: Path, key: Path) -> None:
    """Refuse NAME.crt without NAME.key or the other way round: issuing a new identity would
    mean deleting the half that is there, and a node key lost is an identity lost."""
    if os.path.exists(crt) == os.path.exists(key):
        return
    missing, there = (key, crt) if os.path.exists(crt) else (crt, key)
    what = "is a symlink to a missing file" if os.path.islink(missing) else "is missing"
    raise IdentityError(
        f"{missing} {what} ({there.name} is there): restore it from a backup, or delete "
        f"{there} to issue a new identity"
    )


def _check_dates(cert: x509.Certificate, path: Path, expired_hint: str) -> None:
    now = dt.datetime.now(dt.UTC)
    if now < cert.not_valid_before_utc:
        raise IdentityError(
            f"{path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: "
            "check this host's clock"
        )
    if now > cert.not_valid_after_utc:
        expired = cert.not_valid_after_utc
        raise IdentityError(f"{path} expired on {expired:%Y-%m-%d}: {expired_hint}")


def _load_ca_cert(path: Path, cluster: str) -> x509.Certificate:
    """The cluster's CA certificate: the one thing this node trusts, so nobody else may
    change it, and it must be valid now (every leaf it signed fails with it)."""
    ca, status = _load_cert_and_status(path, cluster)
    if status.st_mode & 0o022:
        mode = oct(stat.S_IMODE(status.st_mode))
        raise IdentityError(f"{path} is writable by other users (mode {mode}): chmod go-w it")
    _check_owner(path, status.st_uid, "its owner can choose whom this node trusts")
    _check_dates(
        ca, path, f"cluster {cluster!r} needs a new CA (quicraft certs init) and new identities"
    )
    return ca


def _load_ca(folder: Path, cluster: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_path, key_path = folder / "ca.crt", folder / "ca.key"
    ca = _load_ca_cert(ca_path, cluster)
    key = _load_key(key_path, cluster)
    if _spki(ca.public_key()) != _spki(key.public_key()):
        raise IdentityError(
            f"{key_path} is not the key of {ca_path}: put back the key made with that "
            "certificate (nothing it signed would be trusted)"
        )
    return ca, key


# -- files -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _all_or_nothing() -> Iterator[list[Path]]:
    """Files created in the block (listed by _create) are removed again if it fails."""
    made: list[Path] = []
    try:
        yield made
    except BaseException:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def _create(path: Path, data: bytes, mode: int, made: list[Path]) -> None:
    """Write a new file that must not exist, with `mode` from its creation on."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise IdentityError(f"{path} already exists: refusing to overwrite it") from None
    except OSError as err:
        raise IdentityError(f"cannot create {path}: {err.strerror}") from None
    made.append(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise IdentityError(f"cannot write {path}: {err.strerror}") from None


def _read(path: Path, cluster: str) -> tuple[bytes, os.stat_result]:
    """The bytes of a key or certificate file and its status, as of the open file.

    O_NONBLOCK: opening a FIFO for reading would wait for a writer forever (deaf to Ctrl-C).
    Only a regular file is read, and no more than MAX_PEM bytes of it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        what = "is a symlink to a missing file" if os.path.islink(path) else "is missing"
        raise IdentityError(f"{path} {what}: {_missing_hint(path, cluster)}") from None
    except OSError as err:
        raise IdentityError(f"cannot read {path}: {err.strerror}") from None
    try:
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            raise IdentityError(f"cannot read {path}: it is a directory")
        if not stat.S_ISREG(status.st_mode):
            raise IdentityError(f"{path} is not a regular file")
        data = os.read(fd, MAX_PEM + 1)
    except OSError as err:
        raise IdentityError(f"cannot read {path}: {err.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_PEM:
        raise IdentityError(f"{path} is over {MAX_PEM // 1024} KiB: not a key or certificate")
    return data, status


def _no_cluster(certs_dir: Path, cluster: str) -> str:
    """Why DIR/CLUSTER/ is not there. Most often the cluster name or the certs folder is
    wrong (a typo, or the default ./certs after `quicraft local`), rather than the cluster
    having no CA yet: so the message names the clusters that are there first."""
    try:
        found = sorted(p.name for p in certs_dir.iterdir() if (p / "ca.crt").is_file())
        there = f"found: {', '.join(found[:10])}" if found else "it holds none"
    except FileNotFoundError:
        found, there = [], "no such folder"
    except NotADirectoryError:
        found, there = [], "it is not a folder"
    except OSError as err:
        found, there = [], f"cannot read it: {err.strerror}"
    problem = f"no cluster {cluster!r} under {certs_dir} ({there})"
    local = LOCAL_CERTS / cluster
    if local.is_dir() and local.resolve() != (certs_dir / cluster).resolve():
        return (
            f"{problem}: `quicraft local` keeps its keys in {LOCAL_CERTS}; give that folder "
            "as the certs folder (--certs on the command line)"
        )
    if found:
        return f"{problem}: check the cluster name and the certs folder"
    return (
        f"{problem}: give the certs folder that holds {cluster}/, or create the cluster's CA "
        f"with `quicraft certs init --cluster {cluster}`"
    )


def _missing_hint(path: Path, cluster: str) -> str:
    if path.name == "ca.key" and os.path.exists(path.with_name("ca.crt")):
        # The CA exists, its key is kept elsewhere (as it may well be): certs init
        # would refuse to make a second CA.
        return (
            "this folder has the cluster's CA certificate but not its key; issue keys "
            "where ca.key is kept (`quicraft certs issue`) and copy them here"
        )
    if path.name == "ca.crt" and os.path.exists(path.with_name("ca.key")):
        # The CA's key without its certificate: the CA exists, certs init would refuse.
        return (
            "this folder has the cluster's CA key but not its certificate; restore ca.crt "
            "from a backup, or copy it from another host of this cluster"
        )
    if path.name.startswith("ca."):
        return f"create the cluster's CA with `quicraft certs init --cluster {cluster}`"
    return "issue it with `quicraft certs issue`"


def _load_cert_and_status(path: Path, cluster: str) -> tuple[x509.Certificate, os.stat_result]:
    data, status = _read(path, cluster)
    try:
        return x509.load_pem_x509_certificate(data), status
    except ValueError:
        raise IdentityError(f"{path} is not a PEM certificate") from None


def _load_cert(path: Path, cluster: str) -> x509.Certificate:
    return _load_cert_and_status(path, cluster)[0]


def _load_key(path: Path, cluster: str) -> ec.EllipticCurvePrivateKey:
    """A private key, refused when other users may read it (the CA's key admits anyone) or
    when it is another user's (root excepted, on both sides: see docs/security.md)."""
    data, status = _read(path, cluster)
    if status.st_mode & 0o077:
        mode = oct(stat.S_IMODE(status.st_mode))
        raise IdentityError(f"{path} is readable by other users (mode {mode}): chmod 600 it")
    _check_owner(path, status.st_uid, "a key must be your own")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise IdentityError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{path} is not an ECDSA key")
    return key


def _spki(public: CertificatePublicKeyTypes) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
