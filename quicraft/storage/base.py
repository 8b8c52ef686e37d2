"""The storage contract every backend keeps, its errors, and the argument checks they share.

Rules of this module (and of every backend):
- `save()` is one atomic, durable write of a Ready: the snapshot (if any) replaces the stored
  one and the whole stored log, then the entries replace any stored entries from
  `entries[0].index` on, then the hard state. Nothing returns before it is on disk.
- The stored log is always `snapshot.meta.index + 1 ...` without a gap (entries the snapshot
  covers may linger until deleted, but are never loaded). A call that would break
  this is a caller bug: it raises ValueError and writes nothing, so that storage never holds a
  state that `load()` would refuse.
- Messages of StorageError and its subclasses are one line an operator can act on.

Exceptions:

    StorageError         the store cannot be used (not a quicraft store, unknown format, I/O)
    ├── CorruptionError  a record failed its checksum, or the records do not fit together
    └── LockedError      the data directory is already open (another process, or this one)
"""

from __future__ import annotations

from typing import Protocol

from quicraft.core import Entry, HardState, PersistentState, Snapshot

#: Longest name `put_meta` takes, in UTF-8 bytes; metadata is for a handful of small records.
MAX_META_KEY = 1024


class StorageError(Exception):
    """The store cannot be used; the message says which store and why, on one line."""


class CorruptionError(StorageError):
    """A stored record is damaged or inconsistent; the message names the record and the path."""


class LockedError(StorageError):
    """The data directory is in use: a second opener would corrupt it, so it is refused."""


class Storage(Protocol):
    """Where a node keeps its hard state, log and latest snapshot."""

    def load(self) -> PersistentState:
        """Everything stored: hard state, snapshot (meta and data) and the entries after it.

        Verifies every checksum and that the log follows the snapshot without a gap;
        raises CorruptionError otherwise.
        """
        ...

    def save(
        self, *, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None
    ) -> None:
        """Write one Ready atomically and durably (see the rules above)."""
        ...

    def stage(self, index: int, data: bytes) -> None:
        """Optionally write the data of the snapshot at `index` ahead of compact(), from any
        thread, so that compact() has less to write while the log waits. Staged data is
        invisible until compact() stores that snapshot."""
        ...

    def compact(self, snapshot: Snapshot) -> None:
        """Store `snapshot` in place of the current one and drop the entries it covers
        (load() never returns them again; a backend may delete them later)."""
        ...

    def get_meta(self, key: str) -> bytes | None:
        """A small node-level record (cluster id, addresses), or None if never put."""
        ...

    def put_meta(self, key: str, value: bytes) -> None:
        """Store a small node-level record durably."""
        ...

    def close(self) -> None:
        """Release the store; later calls raise StorageError. Closing twice is harmless."""
        ...


def check_hard_state(state: PersistentState, where: object) -> None:
    """The stored hard state fits the stored log, by Raft's rules. load() checks that the
    records are the ones written; this is checked where a node opens its store. The runtime
    writes a term before or with the entries of that term, and a commit index before or with
    the entries it commits: only damage loses the hard state, or the log's tail behind it."""
    last = state.entries[-1].index if state.entries else state.snapshot.meta.index
    if state.hard_state.commit > last:
        raise CorruptionError(
            f"{where}: hard state: commit index {state.hard_state.commit} is beyond the stored "
            f"log, which ends at {last} (the log's tail is missing)"
        )
    # Terms never fall along the log, so its last entry (or the snapshot) has the highest.
    if state.entries:
        term, holder = state.entries[-1].term, f"log entry {last}"
    else:
        term, holder = state.snapshot.meta.term, f"the snapshot at {last}"
    if state.hard_state.term < term:
        raise CorruptionError(
            f"{where}: hard state: term {state.hard_state.term} is below the term {term} of "
            f"{holder} (the hard state is missing or older than the log: a vote may be "
            "forgotten)"
        )


def check_append(entries: list[Entry], snapshot_index: int, last_index: int) -> None:
    """Entries may start anywhere after the snapshot up to one past the last stored entry
    (`last_index` is the snapshot's index when no entry is stored), and must be contiguous."""
    start = entries[0].index
    if not snapshot_index < start <= last_index + 1:
        raise ValueError(
            f"entries start at {start}: they must start after the snapshot at {snapshot_index} "
            f"and at most at {last_index + 1}, one past the last stored entry"
        )
    for expected, entry in enumerate(entries, start):
        if entry.index != expected:
            raise ValueError(f"entries are not contiguous: {entry.index} where {expected} was due")


def check_compact(snapshot: Snapshot, snapshot_index: int) -> None:
    """A compaction never moves the snapshot backwards: the entries it would need are gone."""
    if snapshot.meta.index < snapshot_index:
        raise ValueError(
            f"cannot compact to {snapshot.meta.index}: the stored snapshot is at {snapshot_index}"
        )


def check_meta_key(key: str) -> bytes:
    """The UTF-8 bytes of a metadata name, after checking it is a sensible one."""
    if not isinstance(key, str) or not key:
        raise ValueError("a metadata key is a non-empty string")
    raw = key.encode()
    if len(raw) > MAX_META_KEY:
        raise ValueError(f"metadata key longer than {MAX_META_KEY} bytes")
    return raw


__all__ = [
    "MAX_META_KEY",
    "CorruptionError",
    "LockedError",
    "Storage",
    "StorageError",
    "check_append",
    "check_compact",
    "check_meta_key",
]
