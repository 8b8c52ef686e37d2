"""Fixtures of the transport tests: one cluster of identities per session (keys are cheap,
but every test needs several), and a second, unrelated CA for impostors."""

from __future__ import annotations

from pathlib import Path

import pytest
from transport_helpers import Certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Another CA that also calls its cluster "c1": same name, different trust root."""
    return Certs(tmp_path_factory.mktemp("other-certs"))


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Path:
    return tmp_path / "certs"
