"""Whose data directory this is (quicraft/node/data_owner.py), on the in-memory store."""

from __future__ import annotations

import pytest

from quicraft.node.data_owner import OWNER_KEY, DataOwner, claim
from quicraft.storage import CorruptionError, StorageError
from quicraft.storage.memory import MemoryStorage

N1 = DataOwner("1" * 16, "n1", "c1")


def test_the_first_claim_records_the_owner_and_the_owner_may_come_back() -> None:
    store = MemoryStorage()
    claim(store, N1, "dir")
    claim(store, N1, "dir")
    with pytest.raises(StorageError, match=r"dir holds the data of node n1 \(1+\) of cluster 'c1'"):
        claim(store, DataOwner("2" * 16, "n2", "c1"), "dir")
    # The same name with another key (issued again) is another node.
    with pytest.raises(StorageError, match=r"not of node n1 \(2+\) of cluster 'c2'"):
        claim(store, DataOwner("2" * 16, "n1", "c2"), "dir")


def test_an_unreadable_owner_record_is_corruption() -> None:
    store = MemoryStorage()
    store.put_meta(OWNER_KEY, b"\xff")
    with pytest.raises(CorruptionError, match="unreadable"):
        claim(store, N1, "dir")
