"""verify_peer, the pure policy: every refusal reason, and who is let in on which ALPN."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from transport_helpers import Certs, garbled

from quicraft.transport import (
    ALLOWED_ROLES,
    ALPN_CLIENT,
    ALPN_EVENTS,
    ALPN_MGMT,
    ALPN_RAFT,
    Peer,
    Refusal,
    Role,
    verify_peer,
)
from quicraft.transport.pki import make_ca, new_key

ADDRESS = ("10.0.0.7", 7400)
NOW = dt.datetime.now(dt.UTC)


def check(
    certs: Certs,
    certificate: x509.Certificate | None,
    *,
    alpn: str | None = ALPN_RAFT,
    server: bool = False,
    expect: str | None = None,
    now: dt.datetime | None = None,
) -> Peer | Refusal:
    return verify_peer(
        ca=certs.ca()[0],
        certificate=certificate,
        cluster="c1",
        alpn=alpn,
        peer_is_server=server,
        address=ADDRESS,
        expect_node_id=expect,
        now=now,
    )


def reason(result: Peer | Refusal) -> str:
    assert isinstance(result, Refusal), result
    return result.reason


def test_a_good_node_is_a_peer(certs: Certs) -> None:
    n1 = certs.load("n1")
    peer = check(certs, n1.certificate(), expect=n1.node_id)
    assert peer == Peer(n1.node_id, "n1", Role.NODE, "c1", ADDRESS)
    assert check(certs, n1.certificate(), server=True, alpn=ALPN_CLIENT) == peer


def test_no_certificate(certs: Certs) -> None:
    assert reason(check(certs, None)) == "no_certificate"


@pytest.mark.parametrize("alpn", [None, "h3", "quicraft-raft/2"])
def test_unknown_alpn(certs: Certs, alpn: str | None) -> None:
    assert reason(check(certs, certs.load("n1").certificate(), alpn=alpn)) == "unknown_alpn"


def test_a_certificate_of_another_ca_even_with_our_cluster_name(
    certs: Certs, other_ca: Certs
) -> None:
    impostor = other_ca.load("n1").certificate()
    result = check(certs, impostor)
    assert reason(result) == "unknown_ca"
    assert isinstance(result, Refusal) and "'n1'" in result.detail


def test_a_self_signed_look_alike_of_our_ca(certs: Certs) -> None:
    # same subject as our CA, different key: the signature check must catch it
    fake = make_ca("c1", new_key())
    assert fake.subject == certs.ca()[0].subject
    assert reason(check(certs, fake)) == "unknown_ca"


def test_a_certificate_that_does_not_parse(certs: Certs) -> None:
    """Found by an audit: it raised ValueError (the subject is parsed when read), which the
    server's handshake did not expect: no refusal, no count, a traceback in the log."""
    result = check(certs, garbled(certs.load("n1")).certificate())
    assert result == Refusal("bad_certificate", "the peer's certificate cannot be parsed")


def test_our_ca_certificate_itself_is_not_an_identity(certs: Certs) -> None:
    assert reason(check(certs, certs.ca()[0])) == "bad_certificate"


def test_dates(certs: Certs) -> None:
    cert = certs.load("n1").certificate()
    early = cert.not_valid_before_utc - dt.timedelta(seconds=1)
    late = cert.not_valid_after_utc + dt.timedelta(seconds=1)
    assert reason(check(certs, cert, now=early)) == "not_yet_valid"
    assert reason(check(certs, cert, now=late)) == "expired"
    expired = certs.craft(
        "old",
        Role.NODE,
        not_before=NOW - dt.timedelta(days=30),
        not_after=NOW - dt.timedelta(days=1),
    )
    result = check(certs, expired.certificate())
    assert reason(result) == "expired"
    assert isinstance(result, Refusal) and "'old'" in result.detail
    future = certs.craft("new", Role.NODE, not_before=NOW + dt.timedelta(days=1))
    assert reason(check(certs, future.certificate())) == "not_yet_valid"


def test_an_expired_ca_refuses_everyone(certs: Certs) -> None:
    ca = certs.ca()[0]
    after_ca = ca.not_valid_after_utc + dt.timedelta(days=1)
    # the leaf is crafted to outlive the CA so that only the CA's date can be the reason
    leaf = certs.craft("n9", Role.NODE, not_after=after_ca + dt.timedelta(days=1))
    result = check(certs, leaf.certificate(), now=after_ca)
    assert reason(result) == "expired"
    assert isinstance(result, Refusal) and "cluster CA" in result.detail


def test_another_cluster_name_signed_by_our_ca(certs: Certs) -> None:
    stray = certs.craft("n9", Role.NODE, cluster="c2")
    assert reason(check(certs, stray.certificate())) == "wrong_cluster"


@pytest.mark.parametrize("alpn", sorted(ALLOWED_ROLES))
@pytest.mark.parametrize("role", list(Role))
def test_role_table(certs: Certs, alpn: str, role: Role) -> None:
    cert = certs.craft(f"x-{role.value}", role).certificate()
    result = check(certs, cert, alpn=alpn)
    if role in ALLOWED_ROLES[alpn]:
        assert isinstance(result, Peer) and result.role is role
    else:
        assert reason(result) == "role_not_allowed"


def test_the_role_table_is_what_the_design_says() -> None:
    expected = {
        ALPN_RAFT: {Role.NODE},
        ALPN_CLIENT: {Role.ADMIN, Role.CLIENT, Role.READER},
        ALPN_MGMT: {Role.ADMIN},
        ALPN_EVENTS: {Role.ADMIN, Role.CLIENT, Role.READER},
    }
    assert expected == ALLOWED_ROLES


@pytest.mark.parametrize("role", [Role.ADMIN, Role.CLIENT, Role.READER])
@pytest.mark.parametrize("alpn", sorted(ALLOWED_ROLES))
def test_a_server_must_be_a_node(certs: Certs, role: Role, alpn: str) -> None:
    cert = certs.craft(f"s-{role.value}", role).certificate()
    assert reason(check(certs, cert, server=True, alpn=alpn)) == "not_a_node"


def test_expected_node_id(certs: Certs) -> None:
    n1, n2 = certs.load("n1"), certs.load("n2")
    result = check(certs, n1.certificate(), server=True, expect=n2.node_id)
    assert reason(result) == "wrong_node_id"
    assert isinstance(result, Refusal) and n2.node_id in result.detail
    assert isinstance(check(certs, n1.certificate(), server=True, expect=n1.node_id), Peer)


def test_a_refusal_reads_as_one_line() -> None:
    assert str(Refusal("expired", "it is old")) == "expired: it is old"


def test_public_api_is_sorted_and_importable() -> None:
    import quicraft.transport as transport
    import quicraft.transport.quic as quic

    for module in (transport, quic):
        assert module.__all__ == sorted(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), name


@pytest.mark.parametrize(
    ("signs", "purposes"),
    [
        (False, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
        (True, [ExtendedKeyUsageOID.CODE_SIGNING]),
        (True, [ExtendedKeyUsageOID.SERVER_AUTH]),
        (True, None),
    ],
)
def test_a_certificate_of_our_ca_made_for_another_use_is_not_an_identity(
    certs: Certs, signs: bool, purposes: list[x509.ObjectIdentifier] | None
) -> None:
    """Only what the CA issues as an identity may sign for TLS servers and clients (found by
    a review: key usage and extended key usage were not looked at)."""
    ca, ca_key = certs.ca()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "odd"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "c1"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, Role.NODE.value),
        ]
    )
    usage = dict.fromkeys(
        ["content_commitment", "key_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
         "encipher_only", "decipher_only"],
        False,
    )  # fmt: skip
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(new_key().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=signs, data_encipherment=not signs, **usage),
            critical=True,
        )
    )
    if purposes is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    odd = builder.sign(ca_key, hashes.SHA256())
    assert reason(check(certs, odd)) == "bad_certificate"
    assert reason(check(certs, odd, server=True)) == "bad_certificate"
