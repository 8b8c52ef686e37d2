"""Whose data directory this is: a node runs only on its own.

A node's first start (or `mgmt restore`) records in storage meta which node the directory
belongs to: its id (the fingerprint of its key), its name and its cluster. A later start with
another identity — a second node given the same --data by mistake, a node of another cluster,
or a node whose key was issued again — is refused before anything is read or written: its
log, votes and membership are another node's, and serving them as its own breaks Raft.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from quicraft.core import NodeId
from quicraft.storage import CorruptionError, Storage, StorageError

OWNER_KEY = "owner"


@dataclass(frozen=True, slots=True)
class DataOwner:
    node_id: NodeId
    name: str
    cluster: str

    def __str__(self) -> str:
        return f"node {self.name} ({self.node_id}) of cluster {self.cluster!r}"


def claim(storage: Storage, owner: DataOwner, where: object) -> None:
    """Record `owner` in a directory that has none; StorageError if it is another's."""
    raw = storage.get_meta(OWNER_KEY)
    if raw is None:
        fields = {"id": owner.node_id, "name": owner.name, "cluster": owner.cluster}
        storage.put_meta(OWNER_KEY, cbor2.dumps(fields))
        return
    try:
        fields = cbor2.loads(raw)
        found = DataOwner(str(fields["id"]), str(fields["name"]), str(fields["cluster"]))
    except (ValueError, TypeError, KeyError, cbor2.CBORError):
        raise CorruptionError(f"{where}: the record of whose data this is is unreadable") from None
    if found.node_id != owner.node_id:
        raise StorageError(
            f"{where} holds the data of {found}, not of {owner}: give each node its own --data"
        )
