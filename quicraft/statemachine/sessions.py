"""Client sessions: the table that makes writes exactly-once (Raft thesis §6.3).

Rules:
- A session's id is the log index of its `register` entry, so every replica agrees on it.
- Each session write carries (session, seq). The first time a seq is applied its result is
  stored; the same seq again gets that stored result back and changes nothing.
- Time is the commands' own `ts` (the leader's clock at proposal), never the local clock, and
  it never goes backwards: `now` is the largest ts seen. A session idle for more than the
  timeout expires when any later command is applied. So expiry happens at the same log entry
  on every replica.
- Memory is bounded: results below the client's `ack` (the lowest seq it still awaits) are
  dropped, at most `max_results` are kept per session (lowest seq dropped first), and at most
  `max_sessions` sessions live (least recently active dropped first). A seq whose result was
  dropped is refused rather than applied a second time: exactly-once beats a retry's success.
- Results are stored and handed out as copies, so callers cannot alter the history.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from .base import Result, error_result

DEFAULT_SESSION_TIMEOUT_MS = 10 * 60 * 1000
DEFAULT_MAX_RESULTS = 1024
DEFAULT_MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    last_active_ms: int
    #: Results of seqs below this were dropped; such a seq is refused, never re-applied.
    floor: int = 0
    results: dict[int, Result] = field(default_factory=dict)


class SessionTable:
    """All live sessions, least recently active first."""

    def __init__(
        self,
        timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
        max_results: int = DEFAULT_MAX_RESULTS,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        if timeout_ms <= 0 or max_results <= 0 or max_sessions <= 0:
            raise ValueError("session timeout and limits must be positive")
        self.timeout_ms = timeout_ms
        self.max_results = max_results
        self.max_sessions = max_sessions
        #: The largest command ts applied so far: the state machine's clock.
        self.now_ms = 0
        # Kept in order of last activity: touching a session sets its time to `now_ms`, the
        # largest so far, and moves it to the end, so the idlest session is always first.
        self._sessions: OrderedDict[int, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def get(self, session_id: int) -> Session | None:
        return self._sessions.get(session_id)

    def items(self) -> list[tuple[int, Session]]:
        """(id, session) pairs, least recently active first."""
        return list(self._sessions.items())

    def advance(self, ts_ms: int) -> list[int]:
        """Move the clock to `ts_ms` (if later) and expire idle sessions; returns their ids."""
        self.now_ms = max(self.now_ms, ts_ms)
        expired: list[int] = []
        while self._sessions:
            session_id, session = next(iter(self._sessions.items()))
            if self.now_ms - session.last_active_ms <= self.timeout_ms:
                break
            del self._sessions[session_id]
            expired.append(session_id)
        return expired

    def register(self, session_id: int) -> None:
        """Open session `session_id` (the index of its register entry) at the current time."""
        self._sessions[session_id] = Session(self.now_ms)
        self._sessions.move_to_end(session_id)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    def begin(self, session_id: int, seq: int, ack: int | None) -> Result | None:
        """Start the write (session, seq): None if it should be applied now, else its result.

        The result is the stored first result for a repeated seq, or an error for an unknown
        or expired session or a seq whose result was already dropped. A live session is
        marked active and its results below `ack` are dropped, even for a repeat.
        """
        session = self._sessions.get(session_id)
        if session is None:
            return error_result(
                "session_expired", f"session {session_id} is unknown or has expired"
            )
        session.last_active_ms = self.now_ms
        self._sessions.move_to_end(session_id)
        if ack is not None and ack > session.floor:
            results = session.results
            # Every stored seq is at least the floor (nothing below it is stored, and raising
            # it drops what falls below), so the results to drop are those in [floor, ack):
            # looked up one by one when that is the shorter way, else found by a scan.
            if ack - session.floor <= len(results):
                for old in range(session.floor, ack):
                    results.pop(old, None)
            else:
                for old in [s for s in results if s < ack]:
                    del results[old]
            session.floor = ack
        stored = session.results.get(seq)
        if stored is not None:
            return dict(stored)
        if seq < session.floor:
            return error_result(
                "bad_request",
                f"seq {seq} of session {session_id} is below {session.floor}, where its "
                "results were discarded: refused, since it may have been applied already",
            )
        return None

    def record(self, session_id: int, seq: int, result: Result) -> None:
        """Remember the first result of (session, seq); `begin` must have returned None."""
        session = self._sessions[session_id]
        session.results[seq] = dict(result)
        while len(session.results) > self.max_results:
            lowest = min(session.results)
            del session.results[lowest]
            session.floor = max(session.floor, lowest + 1)

    def restore(self, now_ms: int, sessions: list[tuple[int, Session]]) -> None:
        """Replace the table (already validated; least recently active first)."""
        self.now_ms = now_ms
        self._sessions = OrderedDict(sessions)
