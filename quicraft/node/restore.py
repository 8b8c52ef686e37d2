"""Offline restore: a fresh data directory whose state is a backup file and whose membership
is one node, so that `quicraft node --data DIR` starts a new single-node cluster from it.

Rules of this file:
- Nothing is written until the whole backup has been read and its SHA-256 checked
  (wire/backup.py): a damaged backup leaves no data directory behind.
- Only an empty (or missing) directory is written: a restore never mixes with a node's data.
- A backup is restored only into the cluster it was taken of (its name in the file).
- The stored state is the backup's snapshot (its index and term) with the membership
  replaced by this node alone, and a hard state at that term with no vote: the node elects
  itself on its first election timeout, and the old members are not contacted.
- The snapshot is held in memory while it is written, as a running node holds its own.
"""

from __future__ import annotations

from pathlib import Path

from quicraft.core import HardState, Membership, Snapshot, SnapshotMeta
from quicraft.storage import LevelDBStorage
from quicraft.wire import BackupError, BackupInfo, BackupReader

from .data_owner import DataOwner, claim


class RestoreError(Exception):
    """The restore cannot be done; the message says why, on one line."""


def restore_backup(backup: Path, data_dir: Path, owner: DataOwner) -> BackupInfo:
    """Write a data directory at `data_dir` for the node `owner` from the backup file
    `backup`; the backup's info. RestoreError for a non-empty `data_dir`, an unreadable file or
    a backup of another cluster, BackupError for a file that is not a sound backup."""
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise RestoreError(
            f"{data_dir} is not an empty directory: restore writes a fresh data directory"
        )
    try:
        with backup.open("rb") as fp:
            reader = BackupReader(fp)
            data = b"".join(reader.chunks())  # the digest is checked when chunks() runs out
    except BackupError:
        raise
    except OSError as err:
        raise RestoreError(f"cannot read {backup}: {err.strerror or err}") from None
    info = reader.info
    if info.cluster != owner.cluster:  # its keys, addresses and cluster id are another's
        raise RestoreError(
            f"{backup} is a backup of cluster {info.cluster!r}, not {owner.cluster!r}: "
            f"restore it with --cluster {info.cluster}"
        )
    meta = SnapshotMeta(info.index, info.term, Membership(frozenset({owner.node_id})))
    storage = LevelDBStorage(data_dir)
    try:
        claim(storage, owner, data_dir)
        storage.save(
            hard_state=HardState(term=info.term, vote=None, commit=info.index),
            entries=[],
            snapshot=Snapshot(meta, data),
        )
    finally:
        storage.close()
    return info
