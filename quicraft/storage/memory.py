"""MemoryStorage: the reference backend, kept in plain Python objects.

It is what the Storage contract means, written as simply as possible (it follows the
simulator's `Durable`), and the model the LevelDB backend is tested against. Nothing survives
the process, so it suits tests and throw-away nodes only.
"""

from __future__ import annotations

from quicraft.core import Entry, HardState, PersistentState, Snapshot

from .base import StorageError, check_append, check_compact, check_meta_key


class MemoryStorage:
    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._entries: list[Entry] = []  # always snapshot index + 1, + 2, ...
        self._meta: dict[str, bytes] = {}
        self._closed = False

    def __enter__(self) -> MemoryStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self) -> PersistentState:
        self._check_open()
        return PersistentState(self._hard_state, self._snapshot, list(self._entries))

    def save(
        self, *, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None
    ) -> None:
        self._check_open()
        snapshot_index = self._snapshot.meta.index
        kept = self._entries
        if snapshot is not None:
            # An installed snapshot replaces the whole log (RaftLog.restore does the same).
            snapshot_index, kept = snapshot.meta.index, []
        if entries:
            check_append(entries, snapshot_index, snapshot_index + len(kept))
            kept = kept[: entries[0].index - snapshot_index - 1] + list(entries)
        # Checks passed: from here on nothing can fail, so the write is all or nothing.
        if snapshot is not None:
            self._snapshot = snapshot
        self._entries = kept
        if hard_state is not None:
            self._hard_state = hard_state

    def stage(self, index: int, data: bytes) -> None:
        """Nothing to write ahead: compact() keeps a reference."""
        self._check_open()

    def compact(self, snapshot: Snapshot) -> None:
        self._check_open()
        check_compact(snapshot, self._snapshot.meta.index)
        self._entries = [e for e in self._entries if e.index > snapshot.meta.index]
        self._snapshot = snapshot

    def get_meta(self, key: str) -> bytes | None:
        self._check_open()
        check_meta_key(key)
        return self._meta.get(key)

    def put_meta(self, key: str, value: bytes) -> None:
        self._check_open()
        check_meta_key(key)
        if not isinstance(value, bytes):
            raise TypeError("a metadata value is bytes")
        self._meta[key] = value

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("memory storage: closed")
