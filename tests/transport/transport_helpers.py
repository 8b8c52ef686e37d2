"""Shared pieces of the transport tests: a cluster of identities, and an asyncio runner."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quicraft.transport import Identity, Role, init_cluster, issue, load_identity, node_id_of
from quicraft.transport.pki import cert_pem, key_pem, new_key, sign_leaf

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
    """Run one test coroutine on a fresh loop, failing (not hanging) after `timeout`."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


async def eventually(condition: Any, timeout: float = 5.0) -> None:
    """Wait until condition() is true (for effects that land a few RTTs later)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@dataclass
class Certs:
    """One cluster "c1" under `root`, with identities of every role."""

    root: Path
    cluster: str = "c1"

    def __post_init__(self) -> None:
        if not (self.root / self.cluster / "ca.crt").exists():
            init_cluster(self.root, self.cluster)
            for name, role in (
                ("n1", Role.NODE),
                ("n2", Role.NODE),
                ("n3", Role.NODE),
                ("cl", Role.CLIENT),
                ("rd", Role.READER),
            ):
                issue(self.root, self.cluster, name, role)

    def load(self, name: str) -> Identity:
        return load_identity(self.root, self.cluster, name)

    def ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        folder = self.root / self.cluster
        cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def craft(
        self,
        name: str,
        role: Role,
        *,
        cluster: str | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Identity:
        """An identity signed by this CA with whatever subject and dates a test needs."""
        ca, ca_key = self.ca()
        key = new_key()
        leaf = sign_leaf(
            ca,
            ca_key,
            key.public_key(),
            cluster=cluster or self.cluster,
            name=name,
            role=role,
            not_before=not_before,
            not_after=not_after,
        )
        return Identity(
            cluster=self.cluster,
            name=name,
            role=role,
            node_id=node_id_of(leaf),
            cert_pem=cert_pem(leaf),
            key_pem=key_pem(key),
            ca_pem=cert_pem(ca),
        )


def trusting(identity: Identity, other: Identity) -> Identity:
    """`identity`'s own key and certificate, but trusting `other`'s CA (an impostor's view)."""
    return replace(identity, ca_pem=other.ca_pem, cluster=other.cluster)


def garbled(identity: Identity) -> Identity:
    """`identity` with a key of its own and a certificate whose subject does not parse (a CN
    that is not UTF-8): what anyone may send, since the server checks the signature later."""
    key = new_key()
    placeholder = "QUICRAFT-GARBLED"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, placeholder)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert der.count(placeholder.encode()) == 2  # the subject and the issuer
    der = der.replace(placeholder.encode(), b"\xff" * len(placeholder))
    pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    return replace(identity, cert_pem=pem, key_pem=key_pem(key))
