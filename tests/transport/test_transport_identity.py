"""The CA and identities on disk: layout, file modes, no overwriting, stable ids, clear errors."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import os
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
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
from quicraft.transport.pki import CA_LIFETIME, cert_pem, make_ca, sign_leaf


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
    with pytest.raises(IdentityError, match=r"n2\.crt is missing \(n2\.key is there\)"):
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
    with pytest.raises(IdentityError, match=r"cannot read .*n1\.key: it is a directory"):
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


# -- bad files on disk: refused before anything is written, in one line ----------------------


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def replace_ca(folder: Path, now: dt.datetime) -> x509.Certificate:
    """ca.crt made again for the same key, as if `certs init` had run at `now`."""
    key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    ca = make_ca("c1", key, now=now)
    (folder / "ca.crt").write_bytes(cert_pem(ca))
    return ca


def test_a_ca_key_of_another_ca_is_named_and_nothing_is_written(
    fresh_dir: Path, tmp_path: Path
) -> None:
    """Found by an audit: issue wrote n7's files and then blamed n7.crt."""
    init_cluster(fresh_dir, "c1")
    init_cluster(tmp_path / "other", "c1")
    folder = fresh_dir / "c1"
    (folder / "ca.key").unlink()
    shutil.copy(tmp_path / "other" / "c1" / "ca.key", folder / "ca.key")
    before = listing(folder)
    with pytest.raises(IdentityError, match=r"c1/ca\.key is not the key of .*c1/ca\.crt"):
        issue(fresh_dir, "c1", "n7", Role.NODE)
    assert listing(folder) == before


def test_certificate_dates_are_checked_for_the_ca_and_the_leaf(fresh_dir: Path) -> None:
    init_cluster(fresh_dir, "c1")
    issue(fresh_dir, "c1", "n1", Role.NODE)
    folder = fresh_dir / "c1"
    now = dt.datetime.now(dt.UTC)
    good_ca = (folder / "ca.crt").read_bytes()

    # a leaf that is not valid yet: refused at load (peers would refuse it, blaming no one)
    ca = x509.load_pem_x509_certificate(good_ca)
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    n1_key = serialization.load_pem_private_key((folder / "n1.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    assert isinstance(n1_key, ec.EllipticCurvePrivateKey)
    good_n1 = (folder / "n1.crt").read_bytes()
    tomorrow = now + dt.timedelta(days=1)
    future = sign_leaf(
        ca, ca_key, n1_key.public_key(), cluster="c1", name="n1", role=Role.NODE,
        not_before=tomorrow, not_after=now + dt.timedelta(days=100),
    )  # fmt: skip
    (folder / "n1.crt").write_bytes(cert_pem(future))
    with pytest.raises(IdentityError, match=rf"n1\.crt is not valid before {tomorrow:%Y-%m-%d}"):
        load_identity(fresh_dir, "c1", "n1")
    (folder / "n1.crt").write_bytes(good_n1)

    # an expired CA: refused at load and when issuing, which wrote nothing
    replace_ca(folder, now - dt.timedelta(days=3660))
    with pytest.raises(IdentityError, match=r"ca\.crt expired on .*needs a new CA"):
        load_identity(fresh_dir, "c1", "n1")
    before = listing(folder)
    with pytest.raises(IdentityError, match=r"ca\.crt expired on"):
        issue(fresh_dir, "c1", "n2", Role.NODE)
    assert listing(folder) == before

    # a CA that is not valid yet (a clock that ran ahead when it was made)
    replace_ca(folder, now + dt.timedelta(days=2))
    with pytest.raises(IdentityError, match=r"ca\.crt is not valid before .*clock"):
        load_identity(fresh_dir, "c1", "n1")
    with pytest.raises(IdentityError, match=r"ca\.crt is not valid before"):
        issue(fresh_dir, "c1", "n2", Role.NODE)

    # a CA with 30 days left issues leaves that end with it, not two years later
    ca = replace_ca(folder, now - CA_LIFETIME + dt.timedelta(days=30))
    leaf = x509.load_pem_x509_certificate(issue(fresh_dir, "c1", "n3", Role.NODE).read_bytes())
    assert leaf.not_valid_after_utc == ca.not_valid_after_utc


@pytest.mark.parametrize("lost", ["n1.key", "n1.crt"])
@pytest.mark.parametrize("how", ["deleted", "dangling symlink"])
def test_half_an_identity_says_which_half_is_missing(fresh_dir: Path, lost: str, how: str) -> None:
    """Found by an audit: 'n1.crt already exists', with n1.key gone."""
    init_cluster(fresh_dir, "c1")
    issue(fresh_dir, "c1", "n1", Role.NODE)
    folder = fresh_dir / "c1"
    (folder / lost).unlink()
    if how == "dangling symlink":
        (folder / lost).symlink_to(fresh_dir / "gone")
    there = "n1.crt" if lost == "n1.key" else "n1.key"
    what = "is missing" if how == "deleted" else "is a symlink to a missing file"
    expected = (
        rf"c1/{lost} {what} \({there} is there\): restore it from a backup, or delete "
        rf".*c1/{there} to issue a new identity"
    )
    before = listing(folder)
    for attempt in (
        lambda: issue(fresh_dir, "c1", "n1", Role.NODE),
        lambda: load_identity(fresh_dir, "c1", "n1"),
        lambda: identity_exists(fresh_dir, "c1", "n1"),
    ):
        with pytest.raises(IdentityError, match=expected):
            attempt()
    assert listing(folder) == before


def test_both_halves_dangling_are_named_as_such(fresh_dir: Path) -> None:
    init_cluster(fresh_dir, "c1")
    folder = fresh_dir / "c1"
    for name in ("n1.crt", "n1.key"):
        (folder / name).symlink_to(fresh_dir / "gone")
    assert not identity_exists(fresh_dir, "c1", "n1")
    with pytest.raises(IdentityError, match=r"n1\.crt is a symlink to a missing file"):
        issue(fresh_dir, "c1", "n1", Role.NODE)
    with pytest.raises(IdentityError, match=r"n1\.crt is a symlink to a missing file"):
        load_identity(fresh_dir, "c1", "n1")
    assert not (fresh_dir / "gone").exists()


def test_init_over_a_dangling_ca_crt_leaves_no_orphan_ca_key(fresh_dir: Path) -> None:
    """Found by an audit: ca.key was written, then ca.crt refused, and init could not rerun."""
    folder = fresh_dir / "c1"
    folder.mkdir(parents=True, mode=0o700)
    (folder / "ca.crt").symlink_to(fresh_dir / "gone")
    with pytest.raises(IdentityError, match=r"ca\.crt already exists"):
        init_cluster(fresh_dir, "c1")
    assert listing(folder) == ["ca.crt"]


def test_a_write_that_fails_takes_back_what_the_call_wrote(
    fresh_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_cluster(fresh_dir, "c1")
    folder = fresh_dir / "c1"
    before = listing(folder)
    real_fsync, calls = os.fsync, []

    def fsync_fails_on_the_second_file(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_fails_on_the_second_file)
    with pytest.raises(IdentityError, match=r"cannot write .*n1\.crt: No space left"):
        issue(fresh_dir, "c1", "n1", Role.NODE)
    assert listing(folder) == before  # n1.key, written first, was taken back
    calls.clear()
    with pytest.raises(IdentityError, match=r"cannot write .*c2/ca\.crt"):
        init_cluster(fresh_dir, "c2")
    assert listing(fresh_dir / "c2") == []  # no orphan ca.key


def test_a_missing_ca_certificate_next_to_its_key_must_be_restored(fresh_dir: Path) -> None:
    """Found by an audit: the hint said `certs init`, which refuses (ca.key exists)."""
    init_cluster(fresh_dir, "c1")
    (fresh_dir / "c1" / "ca.crt").unlink()
    with pytest.raises(IdentityError, match=r"ca\.crt is missing: .*restore ca\.crt from a backup"):
        issue(fresh_dir, "c1", "n1", Role.NODE)


def test_what_others_may_write_or_own_is_refused(
    fresh_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_cluster(fresh_dir, "c1")
    issue(fresh_dir, "c1", "n1", Role.NODE)
    folder = fresh_dir / "c1"
    assert load_identity(fresh_dir, "c1", "n1").name == "n1"  # the layout init makes is fine

    # the folder: anyone who may write there can put their own CA or key pair in it
    for bad in (0o777, 0o770, 0o1777):
        os.chmod(folder, bad)
        with pytest.raises(IdentityError, match=r"c1 is writable by other users .*chmod go-w"):
            load_identity(fresh_dir, "c1", "n1")
        with pytest.raises(IdentityError, match="writable by other users"):
            issue(fresh_dir, "c1", "n2", Role.NODE)
    os.chmod(folder, 0o755)  # readable by others is fine: the keys are 0600
    assert load_identity(fresh_dir, "c1", "n1").name == "n1"

    # the trust anchor itself
    os.chmod(folder / "ca.crt", 0o666)
    with pytest.raises(IdentityError, match=r"ca\.crt is writable by other users \(mode 0o666\)"):
        load_identity(fresh_dir, "c1", "n1")
    os.chmod(folder / "ca.crt", 0o644)

    # init refuses to make a CA in such a folder, and writes nothing there
    shared = fresh_dir / "c2"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.raises(IdentityError, match="writable by other users"):
        init_cluster(fresh_dir, "c2")
    assert listing(shared) == []

    # a key owned by another user: refused, unless that user is root, or we are
    key = folder / "n1.key"
    if os.geteuid() == 0:
        os.chown(key, 4321, -1)
    owner = key.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(IdentityError, match=rf"n1\.key belongs to another user \(uid {owner}\)"):
        load_identity(fresh_dir, "c1", "n1")
    for me in (owner, 0):
        monkeypatch.setattr(os, "geteuid", lambda me=me: me)
        assert load_identity(fresh_dir, "c1", "n1").name == "n1"
    if owner != 0:
        os.chown(key, 0, -1)  # root's key, read by a user (root may always read it anyway)
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
        assert load_identity(fresh_dir, "c1", "n1").name == "n1"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_folder_or_ca_certificate_of_another_user_is_refused(
    fresh_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an audit: only a key's owner was looked at. Another user owning DIR/CLUSTER/
    or ca.crt, with modes that let nobody else write (0755, 0644), could put their own CA
    there and so choose whom the node trusts."""
    init_cluster(fresh_dir, "c1")
    issue(fresh_dir, "c1", "n1", Role.NODE)
    folder, stranger = fresh_dir / "c1", 4321
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # a user; the files are root's: fine
    assert load_identity(fresh_dir, "c1", "n1").name == "n1"
    for path, why in (
        (folder, "its owner can put another CA or key pair in it"),
        (folder / "ca.crt", "its owner can choose whom this node trusts"),
    ):
        os.chown(path, stranger, -1)
        refusal = rf"{path.name} belongs to another user \(uid {stranger}\): {why}"
        with pytest.raises(IdentityError, match=refusal):
            load_identity(fresh_dir, "c1", "n1")
        with pytest.raises(IdentityError, match=refusal):
            issue(fresh_dir, "c1", "n2", Role.NODE)
        monkeypatch.setattr(os, "geteuid", lambda: stranger)  # its owner may use it
        assert load_identity(fresh_dir, "c1", "n1").name == "n1"
        monkeypatch.setattr(os, "geteuid", lambda: 0)  # and so may root
        assert load_identity(fresh_dir, "c1", "n1").name == "n1"
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
        os.chown(path, 0, -1)
    assert not (folder / "n2.key").exists()


def within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """What `call` raised (None if nothing), failing if it takes longer than `seconds`."""
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still blocked after {seconds} s"
    return outcome[0]


@pytest.mark.parametrize("file", ["n1.key", "n1.crt", "ca.crt", "ca.key"])
def test_special_files_are_refused_without_blocking(fresh_dir: Path, file: str) -> None:
    """Found by an audit: a FIFO hung the node (deaf to Ctrl-C); /dev/zero would fill memory."""
    init_cluster(fresh_dir, "c1")
    issue(fresh_dir, "c1", "n1", Role.NODE)
    path = fresh_dir / "c1" / file
    use = (lambda: issue(fresh_dir, "c1", "n2", Role.NODE)) if file == "ca.key" else (
        lambda: load_identity(fresh_dir, "c1", "n1")
    )  # fmt: skip
    path.unlink()
    os.mkfifo(path, 0o600)
    try:
        refused = within(5, use)
    finally:
        with contextlib.suppress(OSError):  # let a reader blocked on it go, if one is
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    assert isinstance(refused, IdentityError)
    assert str(refused).endswith(f"c1/{file} is not a regular file")
    path.unlink()
    path.symlink_to("/dev/zero")
    refused = within(5, use)
    assert isinstance(refused, IdentityError) and "is not a regular file" in str(refused)
    path.unlink()
    path.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + b"A" * (64 * 1024))
    path.chmod(0o600)
    with pytest.raises(IdentityError, match=rf"c1/{file} is over 64 KiB"):
        use()


def test_a_certs_folder_that_is_a_file_is_named(tmp_path: Path) -> None:
    """Found by an audit: `cannot write in CD: File exists` named --certs, not CD/c1."""
    (tmp_path / "c1").write_text("")
    with pytest.raises(IdentityError, match=r"cannot write in .*/c1: .*/c1 is not a directory"):
        init_cluster(tmp_path, "c1")
    with pytest.raises(IdentityError, match=r"/c1 is not a directory"):
        load_identity(tmp_path, "c1", "n1")
    with pytest.raises(IdentityError, match=r"/c1 is not a directory"):
        issue(tmp_path, "c1", "n1", Role.NODE)


def test_a_cluster_not_under_the_certs_folder_is_named_with_those_that_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an audit: a mistyped cluster name was told to create a new CA. A client and
    a node both load their identity this way."""
    monkeypatch.chdir(tmp_path)
    init_cluster(Path("certs"), "local")
    init_cluster(Path("certs"), "c2")
    with pytest.raises(IdentityError) as typo:
        load_identity(Path("certs"), "nosuch", "admin")
    assert str(typo.value) == (
        "no cluster 'nosuch' under certs (found: c2, local): check the cluster name and the "
        "certs folder"
    )
    with pytest.raises(
        IdentityError,
        match=r"under nowhere \(no such folder\): give the certs "
        r"folder that holds c1/, or create .* `quicraft certs init --cluster c1`",
    ):
        load_identity(Path("nowhere"), "c1", "admin")
    # `quicraft local` keeps its keys in ./.quicraft-local/certs, not the default ./certs.
    Path(".quicraft-local").mkdir()
    Path("certs").rename(".quicraft-local/certs")
    Path("certs").mkdir()
    with pytest.raises(
        IdentityError,
        match=r"under certs \(it holds none\): `quicraft local` "
        r"keeps its keys in \.quicraft-local/certs; give that folder",
    ):
        load_identity(Path("certs"), "local", "admin")
    assert load_identity(Path(".quicraft-local/certs"), "local", "admin").cluster == "local"
