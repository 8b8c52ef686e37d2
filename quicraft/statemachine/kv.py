"""KVStore: the built-in key-value state machine.

Rules:
- Keys are text, values are bytes. Each key keeps the revision that last changed it: the log
  index of that entry. A deleted key is gone (no tombstone): it reads as (None, 0), like a
  key never set, so revision 0 does not tell the two apart.
- Every write's result carries `revision`: the index it was applied at, even when it changed
  nothing (a delete of a missing key, a failed cas) — its place in the history.
- `incr` treats the value as a signed 64-bit integer in ASCII decimal (a missing key is 0) and
  stores the sum the same way; anything else, or an overflow, is a bad_request result.
- Writes may carry (session, seq) for exactly-once (see sessions.py) or no session at all
  (at-most-once from the client's view: it cannot tell a lost answer from a lost write).
- `apply` is deterministic and never raises for the bytes it is given: a malformed command is
  applied as a no-op whose result is a bad_request error. Reads (`get`, `keys`) are local and
  never go through the log; linearizability is the node's job (ReadIndex).
- `observer`, when set, is told of every change as it is applied (a KVChange: what the key
  held before and after). Writes that change nothing — a delete of a missing key, a failed
  cas, a refused incr, a session's repeated write — report nothing. It is called on the apply
  path, so it must be quick and must not raise; with no observer a write pays one None check.
  `restore` reports nothing: a snapshot replaces the state, it does not replay it.
- A command this replica proposed itself may be announced with `proposed` (its bytes and the
  Command they encode): applying those exact bytes then skips decoding them. Equal bytes
  decode to an equal Command, so this changes no result; a follower decodes every entry.
- The reserved `found` command gives the store its cluster id: the first one applied wins,
  later ones change nothing and answer the id already held. The id is kept in snapshots, so
  a member that joins from a snapshot knows it too.
- The reserved `address` command records where a member serves and its name (the latest one
  applied wins; an empty address forgets the node and its name). Kept in snapshots like the
  cluster id. Neither reserved command touches a key, so neither has a revision of its own
  nor tells the observer.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final, NamedTuple

from .base import Result, error_result
from .commands import (
    ADDRESS_OP,
    FOUND_OP,
    INT64_MAX,
    INT64_MIN,
    Command,
    CommandError,
    decode_command,
)
from .sessions import (
    DEFAULT_MAX_RESULTS,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_SESSION_TIMEOUT_MS,
    SessionTable,
)
from .snapshot import decode_snapshot, encode_snapshot, session_rows

# Strict on purpose: int() would also take " 7", "+7", "7_000" and non-ASCII digits.
_DECIMAL = re.compile(rb"-?[0-9]{1,19}")
#: Proposed commands remembered at most; those never applied (lost with a leadership) are
#: forgotten all at once beyond this.
MAX_PROPOSED: Final = 100_000
_ABSENT: Final = ("", None, 0)  #: the row of a key that is not there
_ZERO: Final = ("", b"0", 0)  #: the same, as incr reads it
#: Keys added since the last listing that it inserts one by one rather than sorting.
_INSERT_AT_MOST: Final = 32


class KVChange(NamedTuple):
    """One applied change of one key, as the observer hears of it (a tuple: it is made on
    the apply path, where a frozen dataclass costs three times as much)."""

    revision: int  #: the entry's log index: the key's new revision
    op: str  #: "set", "delete", "incr" or "cas"
    key: str
    value: bytes | int | None  #: after: bytes (set, cas), the count (incr), None (delete)
    previous: bytes | int | None  #: before: bytes, the count (incr), or None if absent
    ts_ms: int  #: the leader's clock when it proposed the write (the command's ts)


class KVStore:
    """Keys with revisions, plus the session table, driven by the committed log.

    Every replica must use the same session settings: they decide the results.
    """

    def __init__(
        self,
        *,
        session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
        max_results_per_session: int = DEFAULT_MAX_RESULTS,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        # key -> (key, value, revision): the key's row as a snapshot holds it, so that a
        # snapshot lists its rows without building one per key (a third of its encoding).
        self._data: dict[str, tuple[str, bytes, int]] = {}
        # The keys in order, for prefix listing and snapshots, kept in two parts: `_sorted`,
        # and the keys added since it was last brought up to date (`_added`), which the next
        # listing merges in: inserting each new key into the sorted list moved everything
        # after it, a cost per write that grew with the store.
        # Invariant: _sorted and _added are disjoint and together hold exactly the keys.
        self._sorted: list[str] = []
        self._added: set[str] = set()
        self._sessions = SessionTable(session_timeout_ms, max_results_per_session, max_sessions)
        self._last_applied = 0
        self._cluster_id: str | None = None
        self._addresses: dict[str, str] = {}
        self._names: dict[str, str] = {}  #: from the `address` command, like _addresses
        self._removed: set[str] = set()  #: see `removed`
        self._proposed: dict[bytes, Command] = {}  # see `proposed`
        #: Told of every change as it is applied; see the module rules.
        self.observer: Callable[[KVChange], None] | None = None

    # -- reads ----------------------------------------------------------------------------------

    @property
    def last_applied(self) -> int:
        """Index of the last entry applied (or restored from a snapshot); 0 if none."""
        return self._last_applied

    @property
    def sessions(self) -> SessionTable:
        """The session table (for status and tests; change it only through `apply`)."""
        return self._sessions

    @property
    def cluster_id(self) -> str | None:
        """The id the cluster's founder gave it (the `found` command), or None."""
        return self._cluster_id

    @property
    def addresses(self) -> Mapping[str, str]:
        """Where each member serves, as the leaders published it (the `address` command)."""
        return MappingProxyType(self._addresses)

    @property
    def names(self) -> Mapping[str, str]:
        """Each member's name, as the leaders published it with its address."""
        return MappingProxyType(self._names)

    @property
    def removed(self) -> frozenset[str]:
        """The nodes removed from the membership and not added back since, as the node told
        the store with `membership_changed`: a LAN leader adds none of them by itself."""
        return frozenset(self._removed)

    def membership_changed(self, node: str, removed: bool) -> None:
        """Note that a committed membership change removed `node` (`removed`), or added it.
        The node calls it as it applies the change, in log order like `apply`, so every
        replica holds the same set, and snapshots carry it."""
        if removed:
            self._removed.add(node)
        else:
            self._removed.discard(node)

    def get(self, key: str) -> tuple[bytes | None, int]:
        """The key's value and revision, or (None, 0) if it does not exist (never set, or
        deleted: a delete keeps no revision)."""
        _, value, revision = self._data.get(key, _ABSENT)
        return value, revision

    def keys(self, prefix: str = "") -> list[str]:
        """The keys starting with `prefix`, sorted."""
        ordered = self._ordered()
        found: list[str] = []
        for i in range(bisect.bisect_left(ordered, prefix), len(ordered)):
            if not ordered[i].startswith(prefix):
                break
            found.append(ordered[i])
        return found

    def _ordered(self) -> list[str]:
        """All keys in order: `_sorted` with the keys added since merged in. A few go in one
        by one; many, by sorting the lot (about 3 ms for 10,000 added to 20,000)."""
        added = self._added
        if added:
            if len(added) <= _INSERT_AT_MOST:
                for key in added:
                    bisect.insort(self._sorted, key)
            else:
                self._sorted += added
                self._sorted.sort()  # Timsort sorts the added run and merges it in
            added.clear()
        return self._sorted

    def __len__(self) -> int:
        return len(self._data)

    # -- the log --------------------------------------------------------------------------------

    def proposed(self, data: bytes, command: Command) -> None:
        """`data` is `command` encoded (build_command, then encode), proposed by this replica:
        when it is applied, it need not be decoded again."""
        if len(self._proposed) >= MAX_PROPOSED:
            self._proposed.clear()
        self._proposed[data] = command

    def apply(self, index: int, data: bytes) -> Result:
        """Apply the committed entry `index`; see the module rules. Returns its result.

        Raises ValueError only for a caller bug: an index not above `last_applied`.
        """
        if index <= self._last_applied:
            raise ValueError(f"entry {index} applied after entry {self._last_applied}")
        self._last_applied = index
        command = self._proposed.pop(data, None) if type(data) is bytes else None
        if command is None:
            try:
                command = decode_command(data)
            except CommandError as exc:
                return error_result("bad_request", f"malformed command at index {index}: {exc}")
        # The command's ts moves the clock before anything else, so a session that was idle
        # too long is gone even for its own late write.
        self._sessions.advance(command.ts_ms)
        if command.op == "register":
            self._sessions.register(index)
            return {"session": index}
        if command.op == FOUND_OP:
            if self._cluster_id is None:
                self._cluster_id = command.cluster_id
            return {"cluster_id": self._cluster_id}
        if command.op == ADDRESS_OP:
            if command.address:
                self._addresses[command.node] = command.address
                if command.name:
                    self._names[command.node] = command.name
            else:
                self._addresses.pop(command.node, None)
                self._names.pop(command.node, None)
            return {}
        if command.session is None or command.seq is None:
            return self._write(index, command)
        earlier = self._sessions.begin(command.session, command.seq, command.ack)
        if earlier is not None:
            return earlier
        result = self._write(index, command)
        self._sessions.record(command.session, command.seq, result)
        return result

    def _write(self, index: int, command: Command) -> Result:
        key = command.key
        observer = self.observer
        if command.op == "set":
            previous = self._put(key, command.value, index)
            if observer is not None:
                observer(KVChange(index, "set", key, command.value, previous, command.ts_ms))
            return {"revision": index}
        if command.op == "delete":
            removed = self._data.pop(key, None)
            if removed is not None:
                if key in self._added:
                    self._added.remove(key)
                else:
                    del self._sorted[bisect.bisect_left(self._sorted, key)]
                if observer is not None:
                    observer(KVChange(index, "delete", key, None, removed[1], command.ts_ms))
            return {"revision": index, "deleted": removed is not None}
        if command.op == "incr":
            return self._incr(index, key, command.by, command.ts_ms)
        # cas: the only op left once decode_command has validated it.
        current = self._data.get(key, _ABSENT)[1]
        if current != command.expected:
            return {"revision": index, "ok": False, "value": current}
        self._put(key, command.new, index)
        if observer is not None:
            observer(KVChange(index, "cas", key, command.new, current, command.ts_ms))
        return {"revision": index, "ok": True, "value": command.new}

    def _incr(self, index: int, key: str, by: int, ts_ms: int) -> Result:
        current = self._data.get(key, _ZERO)[1]
        # The key as ascii() shows it (!a), not repr(): repr keeps the characters its Python's
        # Unicode tables call printable, so replicas on two Python versions would store (in
        # a session's results) and answer different messages.
        if _DECIMAL.fullmatch(current) is None or not INT64_MIN <= int(current) <= INT64_MAX:
            return error_result("bad_request", f"value of {key!a} is not a 64-bit integer")
        total = int(current) + by
        if not INT64_MIN <= total <= INT64_MAX:
            return error_result("bad_request", f"incr of {key!a} by {by} would overflow")
        previous = self._put(key, str(total).encode("ascii"), index)
        if self.observer is not None:
            before = None if previous is None else int(previous)
            self.observer(KVChange(index, "incr", key, total, before, ts_ms))
        return {"revision": index, "value": total}

    def _put(self, key: str, value: bytes, revision: int) -> bytes | None:
        """Store `value` at `key`; returns what the key held before (None if absent)."""
        before = self._data.get(key)
        if before is None:
            self._added.add(key)
        self._data[key] = (key, value, revision)
        return None if before is None else before[1]

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as canonical CBOR (see snapshot.py); equal states, equal bytes."""
        return self.capture()()

    def capture(self) -> Callable[[], bytes]:
        """A copy of the state now, and the function that encodes it as snapshot() would.

        The copy takes about a millisecond for 16,000 keys; encoding them takes 30-50 ms, so
        the runtime encodes in a worker thread while applying goes on. The copy shares
        only what never changes in place: rows are (key, value, revision) tuples, and
        stored session results are never modified."""
        data, keys = dict(self._data), list(self._ordered())
        now_ms, sessions = self._sessions.now_ms, session_rows(self._sessions.items())
        applied, cluster_id = self._last_applied, self._cluster_id
        addresses, names, removed = dict(self._addresses), dict(self._names), self.removed

        def encode() -> bytes:
            entries = [data[key] for key in keys]
            return encode_snapshot(
                applied, entries, now_ms, sessions, cluster_id, addresses, names, removed
            )

        return encode

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot; ValueError (state untouched) if invalid."""
        self.prepare(data)()

    def prepare(self, data: bytes) -> Callable[[], None]:
        """Decode and check a snapshot, from any thread, touching nothing of the store; the
        function returned makes it the state (a few assignments; call it where `apply` is
        called). ValueError if it is invalid. Decoding 300 MB takes about half a second:
        the node does it in a worker thread while its loop goes on."""
        state = decode_snapshot(data)
        rows = {row[0]: row for row in state.entries}
        ordered = [key for key, _, _ in state.entries]

        def install() -> None:
            self._data, self._sorted, self._added = rows, ordered, set()
            self._sessions.restore(state.now_ms, state.sessions)
            self._last_applied = state.applied
            self._cluster_id = state.cluster_id
            self._addresses = dict(state.addresses)
            self._names = dict(state.names)
            self._removed = set(state.removed)

        return install
