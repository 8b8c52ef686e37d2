"""Offline restore: a fresh data directory whose state is a backup file and whose membership
is one node, so that `quicraft node --data DIR` starts a new single-node cluster from it.

Rules of this file:
- Nothing is written until the whole backup has been read and its SHA-256 checked
  (wire/backup.py): a damaged backup leaves no data directory behind. check_backup does
  every check and writes nothing, so that a command can check before it issues the node's
  key (cli/mgmt.py), then write_restored writes. Only a regular file is read.
- Only an empty (or missing) directory is written: a restore never mixes with a node's data.
  A restore that fails while writing (a full disk) leaves that directory empty again.
- A backup is restored only into the cluster it was taken of (its name in the file).
- The stored state is the backup's snapshot (its index and term) with the membership
  replaced by this node alone, and a hard state at that term with no vote: the node elects
  itself on its first election timeout, and the old members are not contacted.
- A restored cluster is a new cluster: where the backup's state has a cluster id, it gets a
  new random one, so that the old cluster, if it still runs, shows up as a split of the name
  (node/lan.py) instead of passing for the same cluster.
- The snapshot is held in memory while it is written, as a running node holds its own.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from quicraft.core import HardState, Membership, Snapshot, SnapshotMeta
from quicraft.statemachine import with_new_cluster_id
from quicraft.storage import LevelDBStorage
from quicraft.wire import BackupError, BackupInfo, BackupReader

from .data_owner import DataOwner, claim

#: Above any index a log reaches; a header beyond it was not written by a node, and the
#: restored node would fail on its first entry.
MAX_INDEX = 1 << 63


class RestoreError(Exception):
    """The restore cannot be done; the message says why, on one line."""


@dataclass(frozen=True, slots=True)
class Restored:
    info: BackupInfo  #: what the backup file says of itself
    cluster_id: str | None  #: the restored cluster's new id; None where the backup had none


@dataclass(frozen=True, slots=True)
class CheckedBackup:
    """A backup read whole and checked (check_backup), ready to be written."""

    path: Path
    info: BackupInfo
    data: bytes = field(repr=False)  #: the state, with its new cluster id
    cluster_id: str | None


def restore_backup(backup: Path, data_dir: Path, owner: DataOwner) -> Restored:
    """Write a data directory at `data_dir` for the node `owner` from the backup file
    `backup`: check_backup, then write_restored."""
    return write_restored(check_backup(backup, data_dir, owner.cluster), data_dir, owner)


def check_backup(backup: Path, data_dir: Path, cluster: str) -> CheckedBackup:
    """Everything that can refuse a restore, with nothing written: RestoreError for a
    non-empty `data_dir`, an unreadable or special file, a backup of another cluster than
    `cluster` or one whose state is not the key-value store's, BackupError for a file that
    is not a sound backup."""
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise RestoreError(
            f"{data_dir} is not an empty directory: restore writes a fresh data directory"
        )
    try:
        with _open_regular(backup) as fp:
            reader = BackupReader(fp)
            data = b"".join(reader.chunks())  # the digest is checked when chunks() runs out
    except BackupError:
        raise
    except OSError as err:
        raise RestoreError(f"cannot read {backup}: {err.strerror or err}") from None
    info = reader.info
    if info.cluster != cluster:  # its keys, addresses and cluster id are another's
        raise RestoreError(
            f"{backup} is a backup of cluster {info.cluster!r}, not {cluster!r}: "
            f"restore it with --cluster {info.cluster}"
        )
    try:
        data, cluster_id, applied = with_new_cluster_id(data)
    except ValueError as err:
        raise RestoreError(f"{backup} holds no state quicraft can restore: {err}") from None
    # The digest shows the file is as written, not that its writer was quicraft: the header
    # must agree with the state it carries. Its index may be past the state's: entries the
    # state machine does not apply (a new leader's empty entry, membership changes) move a
    # snapshot's index but not the state's.
    if not applied <= info.index < MAX_INDEX or info.term < 1:
        raise RestoreError(
            f"{backup} contradicts itself: its header says index {info.index} (term "
            f"{info.term}), its state was applied up to index {applied}"
        )
    return CheckedBackup(backup, info, data, cluster_id)


def write_restored(backup: CheckedBackup, data_dir: Path, owner: DataOwner) -> Restored:
    """Write the data directory of `owner` holding the state of `backup`."""
    info = backup.info
    meta = SnapshotMeta(info.index, info.term, Membership(frozenset({owner.node_id})))
    storage = LevelDBStorage(data_dir)
    try:
        try:
            claim(storage, owner, data_dir)
            storage.save(
                hard_state=HardState(term=info.term, vote=None, commit=info.index),
                entries=[],
                snapshot=Snapshot(meta, backup.data),
            )
        finally:
            storage.close()
    except BaseException:
        # A store without the snapshot is a new node's: started, it would found an empty
        # cluster. The directory was empty (check_backup), and is left so, to restore again.
        with contextlib.suppress(OSError):
            for child in data_dir.iterdir():
                child.unlink()
        raise
    return Restored(info, backup.cluster_id)


def _open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading, if it is a regular file. O_NONBLOCK: opening a FIFO would
    otherwise wait for a writer, and reading it (or a device) might never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise RestoreError(f"cannot read {path}: it is a directory")
        if not stat.S_ISREG(mode):
            raise RestoreError(f"{path} is not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
