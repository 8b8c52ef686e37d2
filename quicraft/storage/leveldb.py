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
- Taking a snapshot must not hold up the log's writes for long (they wait for each other in
  LevelDB): stage() writes the chunks beforehand, one batch each, so log writes go between
  them, and compact() then writes only the snapshot record. The entries a snapshot covers are
  deleted a slice at a time with the next writes; until then load() skips them.
- Old chunks are deleted by the keys kept in memory (`_chunks`), never found by a scan: an
  iterator reads whole blocks, values too, and scanning 330 MB of chunks held the log's
  writes for a second, long enough for the followers to start an election.
"""

from __future__ import annotations

import threading
from pathlib import Path

import plyvel  # type: ignore[import-untyped]  # no stubs; used through a few calls

from quicraft.core import Entry, HardState, PersistentState, Snapshot

from . import records as rec
from .base import StorageError, check_append, check_compact, check_meta_key
from .directory import open_store, text_of, translated

#: Every read checks LevelDB's block checksums (its default is not to): a damaged block can
#: change a key, and a key that changed reads as missing, which no record checksum of ours
#: can catch. load() reads everything once, so it also keeps the cache for others.
_SCAN = {"verify_checksums": True, "fill_cache": False}
#: Entries covered by a snapshot that one save() deletes (about a millisecond's work).
TRIM_PER_SAVE = 1000
#: The first key after every log entry key, and after every chunk key.
_AFTER_ENTRIES = bytes([rec.ENTRY_PREFIX[0] + 1])
_AFTER_CHUNKS = bytes([rec.CHUNK_PREFIX[0] + 1])


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
                # Where the log starts and ends, so that save() can trim a covered prefix and
                # cut a suffix without reading them.
                raw = self._db.get(rec.SNAPSHOT_KEY, verify_checksums=True)
                self._snapshot_index = 0
                #: The key of every chunk stored: the snapshot record's, and any staged by a
                #: compaction that never finished (above it; rare, so found by a scan).
                self._chunks: set[bytes] = set()
                if raw is not None:
                    header = rec.decode_snapshot_header(raw)
                    self._snapshot_index = header.meta.index
                    self._chunks = {
                        rec.chunk_key(self._snapshot_index, n) for n in range(header.chunks)
                    }
                unfinished = rec.chunk_key(self._snapshot_index + 1, 0)
                self._chunks.update(self._keys(start=unfinished, stop=_AFTER_CHUNKS))
                self._last_index = self._snapshot_index
                self._trim_from = self._snapshot_index + 1  # the lowest entry left to delete
                with self._db.iterator(
                    prefix=rec.ENTRY_PREFIX, include_value=False, verify_checksums=True
                ) as keys:
                    first = next(keys, None)
                with self._db.iterator(
                    prefix=rec.ENTRY_PREFIX,
                    reverse=True,
                    include_value=False,
                    verify_checksums=True,
                ) as keys:
                    last = next(keys, None)
                if first is not None and last is not None:
                    self._trim_from = min(self._trim_from, rec.entry_index(first))
                    self._last_index = max(self._last_index, rec.entry_index(last))
        except BaseException:
            self._db.close()
            raise
        #: (index, data, chunks written) of the snapshot stage() is writing or wrote; None
        #: once anything deleted chunks since. And the CRC-32 of its data, computed there:
        #: in compact() it would hold the log's writes (about 0.1 s for 300 MB).
        self._staged: tuple[int, bytes, int] | None = None
        self._staged_crc = 0

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
            trim_from, chunks = self._trim_from, self._chunks
            if snapshot is not None:
                # An installed snapshot replaces the whole log (RaftLog.restore does the same).
                chunks = self._put_snapshot(batch, snapshot)
                for key in self._keys(prefix=rec.ENTRY_PREFIX):
                    batch.delete(key)
                trim_from = snapshot_index + 1
            elif trim_from <= snapshot_index:
                stop = min(trim_from + TRIM_PER_SAVE, snapshot_index + 1)
                for index in range(trim_from, stop):
                    batch.delete(rec.entry_key(index))
                trim_from = stop
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
            self._trim_from, self._chunks = trim_from, chunks

    def stage(self, index: int, data: bytes) -> None:
        """Write the chunks of the snapshot at `index` ahead of compact(), from any thread.
        They are invisible (load() skips chunks newer than the snapshot record) until
        compact() writes the record that names them, or unused if anything deletes chunks
        first: compact() then writes its own."""
        records = rec.encode_chunks(index, data, self._chunk_size)
        crc = rec.data_crc(data)
        with self._lock:
            self._live()
            if index <= self._snapshot_index:  # load() would take its chunks for damage
                return
            self._staged, self._staged_crc = (index, data, 0), crc
        for number, (key, value) in enumerate(records):
            with self._lock, translated(self.path):
                if self._staged != (index, data, number):  # chunks were deleted meanwhile
                    return
                batch = self._live().write_batch(sync=True)
                batch.put(key, value)
                self._write(batch)
                self._chunks.add(key)
                self._staged = (index, data, number + 1)

    def compact(self, snapshot: Snapshot) -> None:
        with self._lock, translated(self.path):
            db = self._live()
            check_compact(snapshot, self._snapshot_index)
            index, data = snapshot.meta.index, snapshot.data
            chunks = rec.chunk_count(data, self._chunk_size)
            batch = db.write_batch(sync=True)
            if self._staged == (index, data, chunks):
                kept = {rec.chunk_key(index, number) for number in range(chunks)}
                for key in self._chunks - kept:
                    batch.delete(key)
                batch.put(*rec.encode_snapshot_record(snapshot, chunks, self._staged_crc))
            else:
                kept = self._put_snapshot(batch, snapshot)
            # The entries it covers go with the next saves (TRIM_PER_SAVE each).
            self._write(batch)
            self._staged, self._chunks = None, kept
            self._snapshot_index = index
            self._last_index = max(self._last_index, index)

    def get_meta(self, key: str) -> bytes | None:
        name = check_meta_key(key)
        with self._lock, translated(self.path):
            raw = self._live().get(rec.meta_key(name), verify_checksums=True)
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
        with self._db.iterator(include_value=False, verify_checksums=True, **bounds) as keys:
            return list(keys)

    def _put_snapshot(self, batch: plyvel.WriteBatch, snapshot: Snapshot) -> set[bytes]:
        """Replace the stored snapshot in `batch`: the old chunks go, whatever snapshot they
        were of, and the new metadata and chunks are written with them; the new chunks' keys,
        for `_chunks` once the batch is written."""
        for key in self._chunks:
            batch.delete(key)
        self._staged = None
        header, *chunks = rec.encode_snapshot(snapshot, self._chunk_size)
        batch.put(*header)
        for key, value in chunks:
            batch.put(key, value)
        return {key for key, _ in chunks}

    def _load_snapshot(self, db: plyvel.DB) -> Snapshot:
        raw = db.get(rec.SNAPSHOT_KEY, verify_checksums=True)
        header = None if raw is None else rec.decode_snapshot_header(raw)
        index = 0 if header is None else header.meta.index
        # Chunks of a newer snapshot were staged by a compaction that never finished.
        stop = rec.chunk_key(index + 1, 0)
        with db.iterator(start=rec.CHUNK_PREFIX, stop=stop, **_SCAN) as records:
            chunks = [rec.decode_chunk(key, value) for key, value in records]
        if header is None:
            if chunks:
                raise rec.RecordError("snapshot metadata: missing, but snapshot chunks exist")
            return Snapshot()
        return rec.assemble_snapshot(header, chunks)

    def _load_entries(self, db: plyvel.DB, snapshot_index: int) -> list[Entry]:
        entries: list[Entry] = []
        expected = snapshot_index + 1
        # Entries the snapshot covers may wait to be deleted (TRIM_PER_SAVE): skip them.
        start = rec.entry_key(snapshot_index + 1)
        with db.iterator(start=start, stop=_AFTER_ENTRIES, **_SCAN) as records:
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
