"""LevelDBStorage: the durable backend, one LevelDB database (plyvel) per data directory.

Rules of this module:
- Every mutation is one WriteBatch written with sync=True: one fsync per call, and LevelDB
  applies a batch whole or not at all, so a crash never leaves half a Ready (or half a
  snapshot) behind. A call returns only once its batch is on disk.
- The layout is records.py's. `load()` decodes and checks every record it returns and that the
  log follows the snapshot without a gap; any failure is a CorruptionError naming the path and
  the record. LevelDB's own block checksums are verified on those reads too.
- LevelDB's LOCK file keeps a directory to one opener, in this process or any other; losing
  that race is a LockedError, never a wait.
- Calls are serialised by a lock: the runtime writes from a worker thread, and the in-memory
  bounds below must move together with the batch that changes them.
"""

from __future__ import annotations

import threading
from pathlib import Path

import plyvel  # type: ignore[import-untyped]  # no stubs; used through a few calls

from quicraft.core import Entry, HardState, PersistentState, Snapshot

from . import records as rec
from .base import StorageError, check_append, check_compact, check_meta_key
from .directory import open_store, text_of, translated

#: load() reads everything once: check LevelDB's block checksums, and keep the cache for others.
_SCAN = {"verify_checksums": True, "fill_cache": False}


class LevelDBStorage:
    def __init__(self, path: Path, *, chunk_size: int = rec.CHUNK_SIZE) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.path = Path(path)
        self._chunk_size = chunk_size
        self._lock = threading.Lock()
        self._db = open_store(self.path)
        try:
            with translated(self.path):
                # Where the log ends, so that save() can cut a suffix without reading it.
                raw = self._db.get(rec.SNAPSHOT_KEY)
                self._snapshot_index = 0
                if raw is not None:
                    self._snapshot_index = rec.decode_snapshot_header(raw).meta.index
                with self._db.iterator(
                    prefix=rec.ENTRY_PREFIX, reverse=True, include_value=False
                ) as keys:
                    last = next(keys, None)
                self._last_index = self._snapshot_index
                if last is not None:
                    self._last_index = rec.entry_index(last)
        except BaseException:
            self._db.close()
            raise

    def __enter__(self) -> LevelDBStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Storage protocol -------------------------------------------------------------

    def load(self) -> PersistentState:
        with self._lock, translated(self.path):
            db = self._live()
            raw = db.get(rec.HARD_STATE_KEY, verify_checksums=True)
            hard_state = HardState() if raw is None else rec.decode_hard_state(raw)
            snapshot = self._load_snapshot(db)
            entries = self._load_entries(db, snapshot.meta.index)
            return PersistentState(hard_state, snapshot, entries)

    def save(
        self, *, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None
    ) -> None:
        with self._lock, translated(self.path):
            db = self._live()
            snapshot_index, last = self._snapshot_index, self._last_index
            if snapshot is not None:
                snapshot_index = last = snapshot.meta.index
            if entries:
                check_append(entries, snapshot_index, last)
            batch = db.write_batch(sync=True)
            if snapshot is not None:
                # An installed snapshot replaces the whole log (RaftLog.restore does the same).
                self._put_snapshot(batch, snapshot)
                for key in self._keys(prefix=rec.ENTRY_PREFIX):
                    batch.delete(key)
            if entries:
                put, encode = batch.put, rec.encode_entry
                for entry in entries:
                    put(*encode(entry))
                # Stored entries past the new ones belong to the overwritten suffix.
                new_last = entries[-1].index
                for index in range(new_last + 1, last + 1):
                    batch.delete(rec.entry_key(index))
                last = new_last
            if hard_state is not None:
                batch.put(rec.HARD_STATE_KEY, rec.encode_hard_state(hard_state))
            self._write(batch)
            self._snapshot_index, self._last_index = snapshot_index, last

    def compact(self, snapshot: Snapshot) -> None:
        with self._lock, translated(self.path):
            db = self._live()
            check_compact(snapshot, self._snapshot_index)
            index = snapshot.meta.index
            batch = db.write_batch(sync=True)
            self._put_snapshot(batch, snapshot)
            for key in self._keys(start=rec.entry_key(0), stop=rec.entry_key(index + 1)):
                batch.delete(key)
            self._write(batch)
            self._snapshot_index = index
            self._last_index = max(self._last_index, index)

    def get_meta(self, key: str) -> bytes | None:
        name = check_meta_key(key)
        with self._lock, translated(self.path):
            raw = self._live().get(rec.meta_key(name))
            if raw is None:
                return None
            return bytes(rec.unseal(rec.meta_key(name), raw, f"metadata {key!r}"))

    def put_meta(self, key: str, value: bytes) -> None:
        name = check_meta_key(key)
        if not isinstance(value, bytes):
            raise TypeError("a metadata value is bytes")
        with self._lock:
            batch = self._live().write_batch(sync=True)
            batch.put(rec.meta_key(name), rec.seal(rec.meta_key(name), value))
            self._write(batch)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers --------------------------------------------------------------------------

    def _live(self) -> plyvel.DB:
        if self._db.closed:
            raise StorageError(f"{self.path}: storage is closed")
        return self._db

    def _write(self, batch: plyvel.WriteBatch) -> None:
        try:
            batch.write()
        except plyvel.Error as e:
            raise StorageError(f"{self.path}: write failed: {text_of(e)}") from None

    def _keys(self, **bounds: bytes) -> list[bytes]:
        """The stored keys within `bounds` (plyvel's prefix, or start and stop)."""
        with self._db.iterator(include_value=False, **bounds) as keys:
            return list(keys)

    def _put_snapshot(self, batch: plyvel.WriteBatch, snapshot: Snapshot) -> None:
        """Replace the stored snapshot in `batch`: the old chunks go, whatever snapshot they
        were of, and the new metadata and chunks are written with them."""
        for key in self._keys(prefix=rec.CHUNK_PREFIX):
            batch.delete(key)
        for key, value in rec.encode_snapshot(snapshot, self._chunk_size):
            batch.put(key, value)

    def _load_snapshot(self, db: plyvel.DB) -> Snapshot:
        with db.iterator(prefix=rec.CHUNK_PREFIX, **_SCAN) as records:
            chunks = [rec.decode_chunk(key, value) for key, value in records]
        raw = db.get(rec.SNAPSHOT_KEY, verify_checksums=True)
        if raw is None:
            if chunks:
                raise rec.RecordError("snapshot metadata: missing, but snapshot chunks exist")
            return Snapshot()
        return rec.assemble_snapshot(rec.decode_snapshot_header(raw), chunks)

    def _load_entries(self, db: plyvel.DB, snapshot_index: int) -> list[Entry]:
        entries: list[Entry] = []
        expected = snapshot_index + 1
        with db.iterator(prefix=rec.ENTRY_PREFIX, **_SCAN) as records:
            for key, value in records:
                entry = rec.decode_entry(key, value)
                if entry.index != expected:
                    if not entries:
                        raise rec.RecordError(
                            f"log entry {entry.index}: the log must start at {expected}, "
                            f"right after the snapshot at {snapshot_index}"
                        )
                    raise rec.RecordError(
                        f"log entry {expected}: missing (the log jumps from {expected - 1} "
                        f"to {entry.index})"
                    )
                entries.append(entry)
                expected += 1
        return entries
