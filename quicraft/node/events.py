"""EventJournal: the events a node keeps in memory, with positions that make resuming exact.

Positions (docs/events.md says the same for users):
- pos = index << POS_SHIFT | k. A replicated fact — a key-value change, a leader's first entry
  of its term (leader_changed), a membership change — takes k = 0 at its own log index, so
  every node gives it the same position. A node-local observation (role_changed,
  term_changed, snapshot_*, node_discovered / node_lost, cluster_split_detected) takes the
  next k (1 .. LOCAL_SLOTS) at the index last applied when it happened. Past LOCAL_SLOTS at
  one index it is dropped and counted: a thousand local events without one applied entry is
  a node in trouble, and its log says so.
- Positions therefore rise strictly in the order events are recorded, and `since` is exact:
  a subscriber gets every held event with pos > since, in order, each once.
Holding:
- A bounded ring of the newest events (max_events, max_bytes), each held as a tuple of plain
  values (_Held), not as an Event: the garbage collector stops tracking such tuples, and a
  ring of 100,000 tracked objects made its every full pass (which stops the node's loop)
  about 50 ms longer. Readers get Events, built as they read. `floor`: every event with
  pos > floor is held here (or is yet to come). `log_floor`: the same for the replicated
  kinds only; it moves above floor when the node starts (it knows nothing before its
  snapshot) or installs a snapshot that skips entries (their events never happened here).
- A subscription whose since is below what it needs ends at once with `compacted`; its
  `oldest` is the lowest since that this subscription could use now.
Subscribers:
- A Subscriber is a cursor (the seq of the next record to look at) and holds no events, so
  memory is the ring's whatever the subscribers do. The service reads batches with `read`
  (at most BATCH_BYTES of events past the first: a batch waits in the stream's send buffer)
  and waits on `wake`.
- Cut off (slow_subscriber) when the ring drops a record it has not read yet, or when it is
  waiting for its stream to drain (`blocked`) and lags more than max_lag events.
- Progress: a subscriber that passes over PROGRESS_EVERY unwanted events since its last frame
  is told how far it got (`progress`), so that it resumes from there, not from its last event.
  A live subscriber (no since) is told where it starts, the position of the newest event
  this node knows of (one taken while the node starts: where it started), as soon as it
  has read what came before: without it, a subscriber that lost its node before its first
  event could only start live again elsewhere, silently missing what happened in between.
- A snapshot install that skips entries ends the subscribers that want replicated kinds with
  `compacted` (they would see a gap); the others go on. close() ends all: shutting_down.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from quicraft.wire import Event, EventStreamEnd, Subscription, encode_event

log = logging.getLogger("quicraft.events")

POS_SHIFT = 10
LOCAL_SLOTS = (1 << POS_SHIFT) - 1
#: Kinds recorded at their own log index (k = 0): the same position on every node.
LOG_KINDS = frozenset({"kv", "leader_changed", "member_added", "member_promoted", "member_removed"})

DEFAULT_MAX_EVENTS = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_LAG = 10_000
#: Unwanted events passed over before a subscriber is told how far it got: 1 % of the
#: default ring, so a resume falls short of what the node holds only after a real gap.
PROGRESS_EVERY = 1000
#: Bytes of events one batch holds at most (beyond its first): a subscriber's batch sits in
#: its stream's send buffer until acknowledged, so without this a slow subscriber of large
#: values held up to 256 of them (hundreds of MiB), each subscriber its own copy.
BATCH_BYTES = 1024 * 1024
_RECORD_OVERHEAD = 160  # bytes an event costs beyond its keys and values (a rough count)


def log_position(index: int) -> int:
    """The position of the replicated event at log `index` (a kv event's revision)."""
    return index << POS_SHIFT


def index_of(pos: int) -> int:
    """The log index a position belongs to."""
    return pos >> POS_SHIFT


class Record(NamedTuple):
    """One held event, as a reader gets it."""

    seq: int  #: how many events were appended before this one
    event: Event


#: An event as the ring holds it: (pos, kind, at_ms, name, value, name, value, ...). One flat
#: tuple of str, bytes, int and None, which the garbage collector untracks the first time it
#: looks at it (a nested tuple would take one pass per level).
_Held = tuple[Any, ...]


def _held(pos: int, kind: str, at_ms: int, fields: tuple[Any, ...]) -> _Held:
    """The held form of an event, made without an Event (one is made per applied write)."""
    return (pos, kind, at_ms, *fields)


def _flat(data: dict[str, Any]) -> tuple[Any, ...]:
    """An event's fields as it is held: name, value, name, value, ..."""
    return tuple(itertools.chain.from_iterable(data.items()))


def _event(held: _Held) -> Event:
    return Event(held[0], held[1], held[2], dict(zip(held[3::2], held[4::2], strict=True)))


class Subscriber:
    """One subscription's place in the journal."""

    __slots__ = (
        "after",
        "blocked",
        "cursor",
        "end",
        "on_end",
        "passed",
        "passed_to",
        "start",
        "subscription",
        "wake",
    )

    def __init__(self, subscription: Subscription, after: int | None, cursor: int) -> None:
        self.subscription = subscription
        self.after = after  #: the last position delivered (or since): only later ones go out
        self.cursor = cursor  #: seq of the next record to look at
        self.wake = asyncio.Event()  #: set when there may be more to read, or on the end
        self.end: EventStreamEnd | None = None  #: set once the journal ended it
        self.blocked = False  #: the service sets it while waiting for the stream to drain
        self.on_end: Callable[[], None] | None = None  #: called once the journal ends it
        self.passed = 0  #: unwanted events looked at since the last frame
        self.passed_to = 0  #: the position of the last of them
        #: A live subscriber's starting position, not told yet, and the seq of the first
        #: record after it: it is told once the subscriber has read up to there.
        self.start: tuple[int, int] | None = None

    def wants(self, event: Event) -> bool:
        sub = self.subscription
        if sub.kinds is not None and event.kind not in sub.kinds:
            return False
        prefix = sub.prefix
        return not prefix or event.kind != "kv" or event.data["key"].startswith(prefix)

    @property
    def wants_log_kinds(self) -> bool:
        kinds = self.subscription.kinds
        return kinds is None or not kinds.isdisjoint(LOG_KINDS)


class EventJournal:
    def __init__(
        self,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_lag: int = DEFAULT_MAX_LAG,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_events < 1 or max_bytes < 1 or max_lag < 1:
            raise ValueError("journal bounds must be positive")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_lag = max_lag
        self._clock = clock
        self._items: list[_Held | None] = []  # the ring: live events are _items[_start:]
        self._sizes: list[int] = []  # the counted size of each, in step with _items
        self._frames: dict[int, bytes] = {}  # seq -> the event encoded, once a reader asked
        self._start = 0
        self._next_seq = 0
        self._bytes = 0
        self.floor = 0  #: every event with pos > floor is held
        self.log_floor = 0  #: every replicated event with pos > log_floor is held
        self.applied = 0  #: the last log index recorded or passed
        self._local = 0  # the last k used at `applied`
        self.dropped = 0  #: local events dropped for want of a position
        self._subscribers: set[Subscriber] = set()
        self._started = False
        self._closed = False

    # -- feeding ------------------------------------------------------------------------------

    def start(self, index: int) -> None:
        """The node starts with its state machine at `index`: nothing before it is known.

        (The service takes subscriptions while the node starts: one whose since is below
        this ends with compacted; a live one goes on, starting here.)"""
        self.floor = max(self.floor, log_position(index))
        self._started = True
        self._skip_to(index, starting=True)
        for sub in self._subscribers:
            if sub.subscription.since is None:
                self._place(sub)

    def advance(self, index: int) -> None:
        """Log `index` was applied (whether or not it made an event)."""
        if index > self.applied:
            self.applied = index
            self._local = 0

    def record_log(
        self, index: int, kind: str, data: dict[str, Any], at_ms: int | None = None
    ) -> None:
        """The replicated event of log `index`."""
        self.record_fields(index, kind, self._now(at_ms), _flat(data), _size(data))

    def record_fields(
        self, index: int, kind: str, at_ms: int, fields: tuple[Any, ...], size: int
    ) -> None:
        """record_log's event given as its fields, flat (name, value, name, value, ...), and
        its bytes of keys and values: the kv path (an event per applied write on every
        node) builds no map for it."""
        if index <= self.applied:  # a runtime bug: never let it break the order
            log.warning("event %s at index %d after index %d: dropped", kind, index, self.applied)
            return
        self.applied = index
        self._local = 0
        self._append(_held(log_position(index), kind, at_ms, fields), size + _RECORD_OVERHEAD)

    def record_local(self, kind: str, data: dict[str, Any], at_ms: int | None = None) -> None:
        """A node-local event, placed after everything applied so far."""
        if self._local >= LOCAL_SLOTS:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%d local events dropped at index %d", self.dropped, self.applied)
            return
        self._local += 1
        pos = log_position(self.applied) | self._local
        held = _held(pos, kind, self._now(at_ms), _flat(data))
        self._append(held, _size(data) + _RECORD_OVERHEAD)

    def snapshot_installed(self, index: int) -> None:
        """The state machine jumped to `index`: replicated events up to it never happen here."""
        if index > self.applied:
            self._skip_to(index)

    def _skip_to(self, index: int, starting: bool = False) -> None:
        """Replicated events up to `index` will never be recorded: end the subscribers that
        would miss some. `starting`: nothing before `index` ever happened here, so a live
        subscriber, which asked for nothing before it subscribed, misses nothing."""
        self.advance(index)
        self.log_floor = max(self.log_floor, log_position(index))
        for sub in list(self._subscribers):
            if not sub.wants_log_kinds or (starting and sub.subscription.since is None):
                continue
            if sub.after is None or sub.after < self.log_floor:
                self._end(sub, self._compacted(sub))

    def close(self) -> None:
        """The node is stopping: end every subscription."""
        self._closed = True
        for sub in list(self._subscribers):
            self._end(sub, EventStreamEnd("shutting_down", "the node is stopping"))

    # -- subscribing --------------------------------------------------------------------------

    def subscribe(self, subscription: Subscription) -> Subscriber | EventStreamEnd:
        """A cursor for `subscription`, or the end frame that refuses it."""
        if self._closed:
            return EventStreamEnd("shutting_down", "the node is stopping")
        since = subscription.since
        if since is None:
            sub = Subscriber(subscription, None, self._next_seq)
            if self._started:  # else start() places it
                self._place(sub)
        else:
            sub = Subscriber(subscription, since, 0)
            if since < self._oldest(sub):
                return self._compacted(sub)
            sub.cursor = self._seq_after(since)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def read(
        self, sub: Subscriber, limit: int = 256, scan: int = 4096, max_bytes: int = BATCH_BYTES
    ) -> list[Record]:
        """Up to `limit` records `sub` wants next (looking at most at `scan`), moving its cursor;
        fewer once they reach `max_bytes` (at least one): what a batch leaves in the
        subscriber's send buffer is bounded in bytes, not only in events."""
        first = self._first_seq()
        if sub.cursor < first:
            sub.cursor = first  # only after a cut: the service sees sub.end first
        found: list[Record] = []
        size = 0
        end = min(self._next_seq, sub.cursor + scan)
        offset = self._start - first
        while sub.cursor < end and len(found) < limit and size < max_bytes:
            held = self._items[sub.cursor + offset]
            seq = sub.cursor
            sub.cursor += 1
            assert held is not None
            if sub.after is not None and held[0] <= sub.after:
                continue
            event = _event(held)
            if sub.wants(event):
                sub.after = event.pos
                sub.passed = 0
                if sub.start is not None and seq >= sub.start[1]:
                    sub.start = None  # this event tells it more
                found.append(Record(seq, event))
                size += self._sizes[seq + offset]
            else:
                sub.passed += 1
                sub.passed_to = event.pos
        return found

    def progress(self, sub: Subscriber) -> int | None:
        """The position to tell `sub` it has got to: where a live one starts, until an event
        has told it more, and once it has passed over PROGRESS_EVERY unwanted events since
        its last frame; else None."""
        if sub.start is not None and sub.cursor >= sub.start[1]:
            pos = sub.start[0]
            sub.start = None
            if sub.after is None or pos > sub.after:  # (an event may have said as much)
                # A frame: what was passed over before it is told too, and may be told
                # again only by a higher position.
                sub.after, sub.passed = pos, 0
                return pos
        if sub.passed < PROGRESS_EVERY:
            return None
        sub.passed = 0
        sub.after = sub.passed_to
        return sub.passed_to

    def frame(self, record: Record) -> bytes:
        """`record` encoded: once, then shared by every subscriber while the event is held."""
        frame = self._frames.get(record.seq)
        if frame is None:
            frame = encode_event(record.event)
            if record.seq >= self._first_seq():
                self._frames[record.seq] = frame
        return frame

    def has_more(self, sub: Subscriber) -> bool:
        return sub.cursor < self._next_seq

    def events(self) -> list[Event]:
        """Every held event, oldest first (for tests and status)."""
        return [_event(held) for held in self._items[self._start :] if held is not None]

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    # -- private ------------------------------------------------------------------------------

    def _now(self, at_ms: int | None) -> int:
        return int(self._clock() * 1000) if at_ms is None else at_ms

    def _first_seq(self) -> int:
        """The seq of the oldest held event (the next seq if none is held)."""
        return self._next_seq - (len(self._items) - self._start)

    def _append(self, held: _Held, size: int) -> None:
        self._items.append(held)
        self._sizes.append(size)
        self._next_seq += 1
        self._bytes += size
        while len(self._items) - self._start > 1 and (
            len(self._items) - self._start > self.max_events or self._bytes > self.max_bytes
        ):
            self._evict()
        if not self._subscribers:
            return
        for sub in list(self._subscribers):
            if sub.blocked and self._next_seq - sub.cursor > self.max_lag:
                self._end(sub, _slow(f"more than {self.max_lag} events behind"))
            else:
                sub.wake.set()

    def _evict(self) -> None:
        seq, held = self._first_seq(), self._items[self._start]
        assert held is not None
        self._items[self._start] = None
        self._bytes -= self._sizes[self._start]
        self._start += 1
        self._frames.pop(seq, None)
        self.floor = max(self.floor, held[0])
        if self._start > 1024 and self._start * 2 > len(self._items):
            del self._items[: self._start]
            del self._sizes[: self._start]
            self._start = 0
        for sub in list(self._subscribers):
            if sub.cursor <= seq:
                self._end(sub, _slow("the node dropped events it had not sent yet"))

    def _place(self, sub: Subscriber) -> None:
        """Where live subscriber `sub` starts: after every event known here."""
        sub.start = (log_position(self.applied) | self._local, self._next_seq)
        sub.wake.set()

    def _oldest(self, sub: Subscriber) -> int:
        return max(self.floor, self.log_floor) if sub.wants_log_kinds else self.floor

    def _compacted(self, sub: Subscriber) -> EventStreamEnd:
        oldest = self._oldest(sub)
        return EventStreamEnd(
            "compacted", f"events up to position {oldest} are no longer held here", oldest
        )

    def _seq_after(self, since: int) -> int:
        """The seq of the first held record with pos > since (the next seq if none)."""
        items = self._items
        at = bisect.bisect_right(items, since, self._start, key=lambda h: h[0] if h else -1)
        return self._next_seq - (len(items) - at)

    def _end(self, sub: Subscriber, end: EventStreamEnd) -> None:
        if sub.end is not None:
            return
        sub.end = end
        self._subscribers.discard(sub)
        sub.wake.set()
        if sub.on_end is not None:
            sub.on_end()


def _slow(why: str) -> EventStreamEnd:
    return EventStreamEnd("slow_subscriber", f"cut off for reading too slowly: {why}")


def _size(data: dict[str, Any]) -> int:
    """The event's bytes of text and binary values."""
    size = 0
    for value in data.values():
        if isinstance(value, bytes | str):
            size += len(value)
    return size
