"""The CA and identities on disk: layout, file modes, no overwriting, stable ids, clear errors."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from quicraft.transport import (
    IdentityError,
    Role,
    identity_exists,
    init_cluster,
    issue,
    load_identity,
    node_id_of,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_a_ca_and_an_admin_with_private_keys_0600(fresh_dir: Path) -> None:
    old = os.umask(0)  # the mode must come from creation, not from a friendly umask
    try:
        folder = init_cluster(fresh_dir, "c1")
    finally:
        os.umask(old)
    assert folder == fresh_dir / "c1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "admin.crt",
        "admin.key",
        "ca.crt",
        "ca.key",
    ]
    assert mode(folder / "ca.key") == 0o600
    assert mode(folder / "admin.key") == 0o600
    assert mode(folder / "ca.crt") == 0o644
    ca = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "c1"
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert lifetime.days >= 3650
    admin = load_identity(fresh_dir, "c1", "admin")
    assert admin.role is Role.ADMIN


def test_issue_writes_a_leaf_with_name_cluster_and_role(fresh_dir: Path) -> None:
    init_cluster(fresh_dir, "c1")
    old = os.umask(0)
    try:
        crt = issue(fresh_dir, "c1", "n1", Role.NODE)
    finally:
        os.umask(old)
    assert crt == fresh_dir / "c1" / "n1.crt"
    assert mode(fresh_dir / "c1" / "n1.key") == 0o600
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    subject = {a.oid: a.value for a in cert.subject}
    assert subject == {
        NameOID.COMMON_NAME: "n1",
        NameOID.ORGANIZATION_NAME: "c1",
        NameOID.ORGANIZATIONAL_UNIT_NAME: "node",
    }
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert 700 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 740
    identity = load_identity(fresh_dir, "c1", "n1")
    assert (identity.cluster, identity.name, identity.role) == ("c1", "n1", Role.NODE)
    assert identity_exists(fresh_dir, "c1", "n1")
    assert not identity_exists(fresh_dir, "c1", "n2")


def test_nothing_is_ever_overwritten(fresh_dir: Path) -> None:
    init_cluster(fresh_dir, "c1")
    ca_before = (fresh_dir / "c1" / "ca.key").read_bytes()
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        init_cluster(fresh_dir, "c1")
    assert (fresh_dir / "c1" / "ca.key").read_bytes() == ca_before

    issue(fresh_dir, "c1", "n1", Role.NODE)
    key_before = (fresh_dir / "c1" / "n1.key").read_bytes()
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        issue(fresh_dir, "c1", "n1", Role.CLIENT)
    assert (fresh_dir / "c1" / "n1.key").read_bytes() == key_before
    # a stray key alone also blocks issuing (it may be someone's only copy)
    (fresh_dir / "c1" / "n2.key").write_bytes(b"precious")
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        issue(fresh_dir, "c1", "n2", Role.NODE)
    assert (fresh_dir / "c1" / "n2.key").read_bytes() == b"precious"


def test_node_id_is_a_stable_fingerprint_of_the_public_key(fresh_dir: Path) -> None:
    init_cluster(fresh_dir, "c1")
    issue(fresh_dir, "c1", "n1", Role.NODE)
    issue(fresh_dir, "c1", "n2", Role.NODE)
    a, again = load_identity(fresh_dir, "c1", "n1"), load_identity(fresh_dir, "c1", "n1")
    b = load_identity(fresh_dir, "c1", "n2")
    assert a.node_id == again.node_id
    assert a.node_id != b.node_id
    assert len(a.node_id) == 16 and int(a.node_id, 16) >= 0
    cert = x509.load_pem_x509_certificate(a.cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert a.node_id == hashlib.sha256(spki).hexdigest()[:16]
    assert node_id_of(a.cert_pem) == node_id_of(cert) == a.node_id


def test_keys_never_appear_in_a_repr(fresh_dir: Path) -> None:
    init_cluster(fresh_dir, "c1")
    admin = load_identity(fresh_dir, "c1", "admin")
    assert b"PRIVATE" in admin.key_pem
    assert "PRIVATE" not in repr(admin) and "BEGIN" not in repr(admin)


def test_issue_without_a_ca_says_how_to_make_one(fresh_dir: Path) -> None:
    with pytest.raises(IdentityError, match="quicraft certs init --cluster c9"):
        issue(fresh_dir, "c9", "n1", Role.NODE)


@pytest.mark.parametrize("name", ["", "ca", "../evil", "a/b", "-x", "x" * 65])
def test_bad_names_are_refused(fresh_dir: Path, name: str) -> None:
    init_cluster(fresh_dir, "c1")
    with pytest.raises(IdentityError, match="bad name"):
        issue(fresh_dir, "c1", name, Role.NODE)


def test_load_errors_name_the_file_and_the_problem(fresh_dir: Path) -> None:
    init_cluster(fresh_dir, "c1")
    issue(fresh_dir, "c1", "n1", Role.NODE)
    issue(fresh_dir, "c1", "n2", Role.NODE)
    folder = fresh_dir / "c1"

    with pytest.raises(IdentityError, match=r"n9\.crt is missing: issue it"):
        load_identity(fresh_dir, "c1", "n9")

    # The CA's key kept elsewhere: certs init (which refuses a second CA) is not the way.
    shutil.move(folder / "ca.key", fresh_dir / "ca.key.elsewhere")
    with pytest.raises(IdentityError, match="has the cluster's CA certificate but not its key"):
        issue(fresh_dir, "c1", "n3", Role.NODE)
    shutil.move(fresh_dir / "ca.key.elsewhere", folder / "ca.key")

    # unreadable: a directory where the key should be (chmod 000 does not stop root)
    shutil.move(folder / "n1.key", folder / "n1.key.bak")
    (folder / "n1.key").mkdir()
    with pytest.raises(IdentityError, match=r"cannot read .*n1\.key"):
        load_identity(fresh_dir, "c1", "n1")
    (folder / "n1.key").rmdir()

    # mismatched: n2's key next to n1's certificate
    shutil.copy(folder / "n2.key", folder / "n1.key")
    with pytest.raises(IdentityError, match=r"n1\.key is not the key of the certificate"):
        load_identity(fresh_dir, "c1", "n1")
    (folder / "n1.key").unlink()
    shutil.move(folder / "n1.key.bak", folder / "n1.key")
    assert load_identity(fresh_dir, "c1", "n1").name == "n1"

    # a key others can read is refused, like ssh does
    os.chmod(folder / "n1.key", 0o644)
    with pytest.raises(IdentityError, match="readable by other users"):
        load_identity(fresh_dir, "c1", "n1")
    os.chmod(folder / "n1.key", 0o600)
    # and so is the CA's key, which would sign anyone in (found by a review)
    os.chmod(folder / "ca.key", 0o640)
    with pytest.raises(IdentityError, match=r"ca\.key is readable by other users"):
        issue(fresh_dir, "c1", "n9", Role.NODE)
    os.chmod(folder / "ca.key", 0o600)

    # garbage instead of a certificate
    (folder / "n2.crt").write_bytes(b"not a certificate")
    with pytest.raises(IdentityError, match=r"n2\.crt is not a PEM certificate"):
        load_identity(fresh_dir, "c1", "n2")


def test_a_certificate_from_another_ca_does_not_load(fresh_dir: Path, tmp_path: Path) -> None:
    init_cluster(fresh_dir, "c1")
    init_cluster(tmp_path / "elsewhere", "c1")
    issue(tmp_path / "elsewhere", "c1", "n1", Role.NODE)
    for suffix in (".crt", ".key"):
        shutil.copy(tmp_path / "elsewhere" / "c1" / f"n1{suffix}", fresh_dir / "c1")
    with pytest.raises(IdentityError, match="is not signed by the CA"):
        load_identity(fresh_dir, "c1", "n1")
