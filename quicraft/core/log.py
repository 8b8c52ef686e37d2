"""The in-core view of the replicated log.

The core keeps every entry after the latest snapshot in memory (compaction bounds this), and
knows which prefix is durable (`stable`). The runtime persists what lies beyond `stable` and calls
back; the core never touches a disk.

Invariants kept here:
- `applied <= committed`; committed entries are never removed or changed.
- `applied` is what the runtime has applied: it moves only when the runtime reports (advance),
  never when a snapshot merely arrives. Until a received snapshot is installed, `applied` may
  lag the snapshot's index and no entry is handed out for applying.
- `offset <= stable <= last_index()`: truncating the log pulls `stable` back; a received
  snapshot sets it to the snapshot's index, where it stays until the snapshot is written.
- The membership in effect is the one of the newest configuration entry in the log, else the
  snapshot's: changes take effect when appended (thesis §4.1) and revert when truncated.
"""

from __future__ import annotations

from .types import NO_TERM, Entry, EntryType, Membership, Snapshot, membership_of


class RaftLog:
    def __init__(self, snapshot: Snapshot, entries: list[Entry], committed: int, applied: int):
        self.snapshot = snapshot
        self.offset = snapshot.meta.index  # the index just before entries[0]
        self.entries: list[Entry] = []
        self.committed = max(committed, snapshot.meta.index)
        self.applied = max(applied, snapshot.meta.index)
        # (index, membership) for every configuration entry in `entries`, oldest first.
        self._changes: list[tuple[int, Membership]] = []
        self._append_unchecked(entries)
        self.stable = self.last_index()
        # A snapshot received from the leader, handed to the runtime in the next Ready.
        self.pending_snapshot: Snapshot | None = None
        #: How many times a leader's entries replaced some of ours (RaftCore._take_back_acks).
        self.truncations = 0
        if self.committed > self.last_index():
            raise ValueError(f"commit index {committed} is beyond the log ({self.last_index()})")

    # -- reading --------------------------------------------------------------------------

    def first_index(self) -> int:
        return self.offset + 1

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def term(self, index: int) -> int | None:
        """The term of the entry at `index`; None if compacted away or not (yet) in the log."""
        if index == self.offset:
            return self.snapshot.meta.term
        if index < self.offset or index > self.last_index():
            return None
        return self.entries[index - self.offset - 1].term

    def last_term(self) -> int:
        term = self.term(self.last_index())
        assert term is not None
        return term

    def matches(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: is a log ending at (last_index, last_term) at least as new as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries lo..hi-1, cut short after `max_bytes` (but never empty if lo < hi)."""
        assert self.offset < lo <= hi <= self.last_index() + 1, (lo, hi, self.offset)
        out = self.entries[lo - self.offset - 1 : hi - self.offset - 1]
        if max_bytes is None:
            return out
        size = 0
        for n, entry in enumerate(out):
            size += entry.size()
            if size > max_bytes and n > 0:
                return out[:n]
        return out

    def unstable_entries(self) -> list[Entry]:
        return self.entries[self.stable - self.offset :]

    def has_unapplied(self) -> bool:
        return self.committed > self.applied >= self.offset

    def unapplied_entries(self) -> list[Entry]:
        if not self.has_unapplied():
            return []  # nothing, or a received snapshot must be installed first
        return self.slice(self.applied + 1, self.committed + 1)

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= `index` whose entry has a term <= `term` (or the log's start).

        Used for fast backtracking: every entry above it is known not to match a log whose entry
        at `index` has `term`, so a whole term of mismatches is skipped in one round trip.
        """
        index = min(index, self.last_index())
        while index > self.offset:
            entry_term = self.term(index)
            if entry_term is not None and entry_term <= term:
                break
            index -= 1
        return index

    def membership(self) -> Membership:
        return self._changes[-1][1] if self._changes else self.snapshot.meta.membership

    def membership_at(self, index: int) -> Membership:
        found = self.snapshot.meta.membership
        for at, membership in self._changes:
            if at > index:
                break
            found = membership
        return found

    def last_change_index(self) -> int:
        """Index of the newest configuration entry still in the log (0 if none)."""
        return self._changes[-1][0] if self._changes else 0

    def membership_index(self) -> int:
        """An index the newest membership holds from: its entry's, or (made before the
        snapshot) the snapshot's, which is at or after the entry."""
        return self._changes[-1][0] if self._changes else self.snapshot.meta.index

    # -- writing --------------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Leader path: entries follow the last index directly."""
        if entries and entries[0].index != self.last_index() + 1:
            raise AssertionError(f"gap: appending {entries[0].index} after {self.last_index()}")
        self._append_unchecked(entries)

    def _append_unchecked(self, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.type is EntryType.CONF_CHANGE:
                self._changes.append((entry.index, membership_of(entry, self.membership())))
        self.entries.extend(entries)

    def maybe_append(self, prev_index: int, prev_term: int, entries: list[Entry]) -> int | None:
        """Follower path: the AppendEntries consistency check and conflict resolution (§5.3).

        Returns the index of the last entry now known to match the leader, or None if the log
        has no entry (prev_index, prev_term).
        """
        if not self.matches(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for n, entry in enumerate(entries):
            here = self.term(entry.index)
            if here == entry.term:
                continue
            if entry.index <= self.offset:
                # Already covered by our snapshot, hence committed and equal to the leader's.
                continue
            if here is not None:
                if entry.index <= self.committed:
                    raise AssertionError(
                        f"leader overwrites committed entry {entry.index} (commit {self.committed})"
                    )
                self._truncate_from(entry.index)
            self._append_unchecked(entries[n:])
            break
        return last_new

    def _truncate_from(self, index: int) -> None:
        self.truncations += 1
        del self.entries[index - self.offset - 1 :]
        self.stable = min(self.stable, index - 1)
        while self._changes and self._changes[-1][0] >= index:
            self._changes.pop()

    def commit_to(self, index: int) -> None:
        """Commit indexes never decrease; a lower index is ignored."""
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def stable_to(self, written: list[Entry]) -> None:
        """The runtime persisted `written`. What of it still matches the log is stable: a
        leader may have replaced its tail meanwhile, and an entry that matches vouches for
        every one before it (Log Matching). Nothing is, while a snapshot received since waits
        to be written: writing it replaces every stored entry, so the entries after it are
        written again with it, even those that match what this write stored."""
        if self.pending_snapshot is not None:
            return
        for entry in reversed(written):
            if self.matches(entry.index, entry.term):
                self.stable = max(self.stable, entry.index)
                return

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        self.snapshot = snapshot
        self.offset = snapshot.meta.index
        self.entries = []
        self._changes = []
        self.committed = snapshot.meta.index
        self.stable = snapshot.meta.index
        self.pending_snapshot = snapshot

    def compact(self, snapshot: Snapshot) -> None:
        """The runtime took `snapshot` of applied state; forget the entries it covers."""
        index = snapshot.meta.index
        if index <= self.offset:
            return
        if index > self.applied:
            raise ValueError(f"snapshot at {index} is beyond the applied index {self.applied}")
        if index > self.stable:  # applied entries were stable first
            raise AssertionError(f"snapshot at {index} is beyond the stable index {self.stable}")
        del self.entries[: index - self.offset]
        self._changes = [(at, m) for at, m in self._changes if at > index]
        self.snapshot = snapshot
        self.offset = index


__all__ = ["NO_TERM", "RaftLog"]
