"""The event journal, feed and service in one process: positions, bounds, cut-offs, ends."""

from __future__ import annotations

import asyncio
import gc
import random
from collections import deque
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from quicraft.core import (
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryType,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)
from quicraft.node import PRESETS, RaftNode
from quicraft.node.event_feed import EventFeed
from quicraft.node.event_service import EventService
from quicraft.node.events import (
    BATCH_BYTES,
    PROGRESS_EVERY,
    EventJournal,
    Subscriber,
    index_of,
    log_position,
)
from quicraft.statemachine import KVChange, KVStore, encode_command
from quicraft.storage import MemoryStorage
from quicraft.telemetry import NO_TELEMETRY, node_tracing, traceparent
from quicraft.transport import ALPN_EVENTS, connect, init_cluster, issue, load_identity
from quicraft.transport import Role as IdentityRole
from quicraft.transport import serve as serve_quic
from quicraft.wire import (
    Event,
    EventFrame,
    EventProgress,
    EventStreamEnd,
    EventStreamReader,
    Subscription,
    encode_progress,
    encode_subscribe,
)


def kv(journal: EventJournal, index: int, key: str = "k", value: bytes = b"v") -> None:
    data = {"op": "set", "key": key, "revision": index, "value": value, "previous": None}
    journal.record_log(index, "kv", data, at_ms=index)


def subscribe(journal: EventJournal, **fields: Any) -> Subscriber:
    sub = journal.subscribe(Subscription(**fields))
    assert isinstance(sub, Subscriber), sub
    return sub


def read_all(journal: EventJournal, sub: Subscriber) -> list[Event]:
    found: list[Event] = []
    while batch := journal.read(sub):
        found += [r.event for r in batch]
    return found


# -- positions and since --------------------------------------------------------------------


def test_log_events_sit_at_their_index_and_local_ones_after_it() -> None:
    journal = EventJournal()
    kv(journal, 1)
    journal.record_local("term_changed", {"term": 2})
    journal.record_local("term_changed", {"term": 3})
    journal.advance(2)  # an entry that made no event
    journal.record_local("term_changed", {"term": 4})
    kv(journal, 3)
    positions = [e.pos for e in journal.events()]
    assert positions == [
        log_position(1),
        log_position(1) + 1,
        log_position(1) + 2,
        log_position(2) + 1,
        log_position(3),
    ]
    assert [index_of(p) for p in positions] == [1, 1, 1, 2, 3]


def test_since_is_exact_and_filters_apply() -> None:
    journal = EventJournal()
    for index in range(1, 6):
        kv(journal, index, key=f"a/{index}" if index % 2 else f"b/{index}")
        journal.record_local("term_changed", {"term": index})
    everything = read_all(journal, subscribe(journal, since=0))
    assert len(everything) == 10
    for cut in range(len(everything)):
        since = everything[cut].pos
        assert read_all(journal, subscribe(journal, since=since)) == everything[cut + 1 :]
    only_a = read_all(journal, subscribe(journal, kinds=frozenset({"kv"}), prefix="a/", since=0))
    assert [e.data["key"] for e in only_a] == ["a/1", "a/3", "a/5"]
    # Live: nothing old, then what comes.
    live = subscribe(journal)
    assert read_all(journal, live) == []
    kv(journal, 6)
    assert [e.pos for e in read_all(journal, live)] == [log_position(6)]


def test_a_since_beyond_the_head_waits_for_later_positions() -> None:
    journal = EventJournal()
    kv(journal, 1)
    sub = subscribe(journal, since=log_position(3) + 5)
    kv(journal, 2)
    kv(journal, 3)
    journal.record_local("term_changed", {"term": 9})  # 3 << 10 | 1: not after since
    kv(journal, 4)
    assert [e.pos for e in read_all(journal, sub)] == [log_position(4)]


def test_local_events_past_the_slots_of_one_index_are_dropped() -> None:
    journal = EventJournal()
    kv(journal, 1)
    for term in range(1100):
        journal.record_local("term_changed", {"term": term})
    kv(journal, 2)
    positions = [e.pos for e in journal.events()]
    assert positions == sorted(set(positions)) and journal.dropped == 1100 - 1023
    assert positions[-2] == log_position(1) + 1023 and positions[-1] == log_position(2)


def test_a_log_event_out_of_order_is_refused() -> None:
    journal = EventJournal()
    kv(journal, 5)
    kv(journal, 4)
    kv(journal, 5)
    assert [e.pos for e in journal.events()] == [log_position(5)]


# -- bounds and compacted -------------------------------------------------------------------


def test_the_ring_is_bounded_and_older_since_is_compacted() -> None:
    journal = EventJournal(max_events=10)
    for index in range(1, 26):
        kv(journal, index)
    held = journal.events()
    assert len(held) == 10 and held[0].pos == log_position(16)
    assert journal.floor == log_position(15)
    end = journal.subscribe(Subscription(since=log_position(14)))
    assert isinstance(end, EventStreamEnd) and end.code == "compacted"
    assert end.oldest == log_position(15)
    sub = subscribe(journal, since=end.oldest)
    assert [e.data["revision"] for e in read_all(journal, sub)] == list(range(16, 26))


def test_held_events_cost_the_garbage_collector_nothing() -> None:
    journal = EventJournal()
    for index in range(1, 1001):
        kv(journal, index)
    journal.record_local("role_changed", {"role": "leader", "previous": "candidate"})
    gc.collect(0)  # the young pass that every held event goes through first
    assert not any(gc.is_tracked(held) for held in journal._items)
    assert journal.events()[-2] == Event(
        log_position(1000),
        "kv",
        1000,
        {"op": "set", "key": "k", "revision": 1000, "value": b"v", "previous": None},
    )


def test_an_encoded_event_is_shared_while_held_then_dropped() -> None:
    journal = EventJournal(max_events=10)
    for index in range(1, 11):
        kv(journal, index)
    first, second = subscribe(journal, since=0), subscribe(journal, since=0)
    record = journal.read(first)[0]
    frame = journal.frame(record)
    assert journal.frame(journal.read(second)[0]) is frame
    assert EventStreamReader(Subscription(since=0)).feed(frame) == record.event
    kv(journal, 11)  # evicts the event at 1: its frame goes with it
    assert record.seq not in journal._frames
    assert journal.frame(record) == frame and record.seq not in journal._frames


def test_the_ring_is_bounded_in_bytes() -> None:
    journal = EventJournal(max_bytes=100_000)
    for index in range(1, 101):
        kv(journal, index, value=b"x" * 10_000)
    assert 5 <= len(journal.events()) <= 10


def test_a_restarted_node_knows_nothing_before_its_snapshot() -> None:
    journal = EventJournal()
    journal.start(40)
    end = journal.subscribe(Subscription(since=log_position(39)))
    assert isinstance(end, EventStreamEnd) and end.oldest == log_position(40)
    sub = subscribe(journal, since=log_position(40))
    kv(journal, 41)
    assert [e.pos for e in read_all(journal, sub)] == [log_position(41)]


@pytest.mark.parametrize("snapshot", [0, 40])
def test_a_live_subscriber_taken_while_the_node_starts_goes_on(snapshot: int) -> None:
    """The node serves events before its Raft log is open (a fresh one waits for its
    founders). A live subscriber then was ended with compacted (oldest 0 on a fresh node), and
    the client, given that one node, raised EventsCompacted for a since=None subscription."""
    journal = EventJournal()
    live = subscribe(journal, kinds=frozenset({"kv"}))
    behind = subscribe(journal, since=log_position(snapshot) - 1) if snapshot else None
    journal.start(snapshot)
    assert live.end is None
    kv(journal, snapshot + 1)
    assert [e.pos for e in read_all(journal, live)] == [log_position(snapshot + 1)]
    if behind is not None:  # a since below what it knows still ends: it would miss events
        assert behind.end is not None and behind.end.code == "compacted"


def test_a_live_subscriber_taken_while_the_node_starts_is_told_where_it_started() -> None:
    """One taken before the node started, which saw only a local event of before the start
    (position 0|1), resumed elsewhere from there and got compacted though it had asked for
    nothing old (found by a review). It is told the start once it has read up to it."""
    journal = EventJournal()
    live = subscribe(journal)
    journal.record_local("node_discovered", {"node": "n2", "address": "127.0.0.1:7402"})
    journal.start(40)
    assert [e.pos for e in read_all(journal, live)] == [1]
    assert journal.progress(live) == log_position(40)
    assert journal.progress(live) is None  # told once
    elsewhere = EventJournal()
    elsewhere.start(40)
    assert isinstance(elsewhere.subscribe(Subscription(since=log_position(40))), Subscriber)
    # On a new node (start at 0) the start is the pre-start event's own position: told by it.
    fresh = EventJournal()
    early = subscribe(fresh)
    fresh.record_local("node_discovered", {"node": "n2", "address": "127.0.0.1:7402"})
    fresh.start(0)
    assert [e.pos for e in read_all(fresh, early)] == [1] and fresh.progress(early) is None


def test_the_start_told_after_many_unwanted_events_is_the_last_progress_before_more() -> None:
    """A live kv subscriber taken while its node starts passed over PROGRESS_EVERY
    node-local events of before the start, then was told the start; the count of passed
    events was not reset by that frame, so the next turn told it the last of them: a
    position below the start, which its reader refuses (found by a review)."""
    journal = EventJournal()
    live = subscribe(journal, kinds=frozenset({"kv"}))
    reader = EventStreamReader(live.subscription)
    for n in range(PROGRESS_EVERY):
        journal.record_local("node_discovered", {"node": f"n{n}", "address": "127.0.0.1:1"})
    journal.start(40)
    told = []
    for _ in range(3):  # the service's turns: read a batch, then maybe a progress frame
        assert journal.read(live) == []
        if (pos := journal.progress(live)) is not None:
            told.append(pos)
            reader.feed(encode_progress(pos))  # ProtocolError if it does not rise
    assert told == [log_position(40)]
    kv(journal, 41)
    assert [e.pos for e in read_all(journal, live)] == [log_position(41)]


def test_a_snapshot_install_ends_only_subscribers_of_replicated_kinds() -> None:
    journal = EventJournal()
    kv(journal, 1)
    wants_kv = subscribe(journal, since=0)
    local_only = subscribe(journal, kinds=frozenset({"role_changed"}), since=0)
    journal.snapshot_installed(30)
    assert wants_kv.end is not None and wants_kv.end.code == "compacted"
    assert wants_kv.end.oldest == log_position(30)
    assert local_only.end is None
    journal.record_local("role_changed", {"node": "n1", "role": "follower", "term": 2})
    assert [e.pos for e in read_all(journal, local_only)] == [log_position(30) + 1]


# -- slow subscribers -----------------------------------------------------------------------


def test_a_blocked_subscriber_too_far_behind_is_cut_off() -> None:
    journal = EventJournal(max_lag=5)
    fast, slow = subscribe(journal), subscribe(journal)
    slow.blocked = True
    cut: list[bool] = []
    slow.on_end = lambda: cut.append(True)
    for index in range(1, 7):
        kv(journal, index)
    assert slow.end is not None and slow.end.code == "slow_subscriber" and cut == [True]
    assert fast.end is None and len(read_all(journal, fast)) == 6
    assert journal.subscribers == 1


def test_a_subscriber_whose_unread_events_are_dropped_is_cut_off() -> None:
    journal = EventJournal(max_events=4)
    sub = subscribe(journal, since=0)
    for index in range(1, 6):
        kv(journal, index)
    assert sub.end is not None and sub.end.code == "slow_subscriber"


# -- the kv observer and the feed -----------------------------------------------------------


def test_the_kv_store_reports_changes_only() -> None:
    store = KVStore()
    seen: list[KVChange] = []
    store.observer = seen.append
    commands: list[tuple[str, dict[str, object]]] = [
        ("set", {"key": "a", "value": b"1"}),
        ("incr", {"key": "a", "by": 2}),
        ("cas", {"key": "a", "expected": b"3", "new": b"x"}),
        ("cas", {"key": "a", "expected": b"nope", "new": b"y"}),  # fails: no change
        ("incr", {"key": "a"}),  # not a number: no change
        ("delete", {"key": "a"}),
        ("delete", {"key": "a"}),  # nothing to delete
        ("incr", {"key": "n", "by": 5}),
    ]
    for index, (op, args) in enumerate(commands, start=1):
        store.apply(index, encode_command(op, args, ts_ms=1000 + index))
    assert [(c.revision, c.op, c.key, c.value, c.previous, c.ts_ms) for c in seen] == [
        (1, "set", "a", b"1", None, 1001),
        (2, "incr", "a", 3, 1, 1002),
        (3, "cas", "a", b"x", b"3", 1003),
        (6, "delete", "a", None, b"x", 1006),
        (8, "incr", "n", 5, None, 1008),
    ]


def test_the_feed_records_each_kv_change_as_its_event() -> None:
    raft = RaftNode("n1", MemoryStorage(), KVStore(), PRESETS["test"], lambda m, tp: None)
    store = KVStore()
    journal = EventJournal()
    EventFeed(journal, "n1", lambda node: None).attach(raft, store)
    store.apply(1, encode_command("set", {"key": "été", "value": b"12"}, ts_ms=1001))
    store.apply(2, encode_command("incr", {"key": "été", "by": 5}, ts_ms=1002))
    store.apply(3, encode_command("delete", {"key": "été"}, ts_ms=1003))
    fields = ["op", "key", "revision", "value", "previous"]  # in the wire's order

    def event(index: int, *values: object) -> tuple[int, str, int, dict[str, object]]:
        return log_position(index), "kv", 1000 + index, dict(zip(fields, values, strict=True))

    got = [(e.pos, e.kind, e.at_ms, e.data) for e in journal.events()]
    assert got == [
        event(1, "set", "été", 1, b"12", None),
        event(2, "incr", "été", 2, 17, 12),
        event(3, "delete", "été", 3, None, b"17"),
    ]
    assert all(list(e.data) == fields for e in journal.events())


def test_the_feed_turns_entries_and_soft_state_into_events() -> None:
    raft = RaftNode("n1", MemoryStorage(), KVStore(), PRESETS["test"], lambda m, tp: None)
    store = KVStore()
    feed = EventFeed(EventJournal(), "n1", lambda node: f"127.0.0.1:{7400 + len(node)}")
    feed.attach(raft, store)
    raft.open(MemoryStorage().load(), ["n1"])
    feed.opened()
    assert raft.on_applied is not None and raft.on_soft_state is not None
    add = ConfChange(ConfChangeKind.ADD_LEARNER, "n22").encode()
    promote = ConfChange(ConfChangeKind.PROMOTE, "n22").encode()
    entries = [
        Entry(1, 1, EntryType.CONF_CHANGE, ConfChange(ConfChangeKind.ADD_VOTER, "n1").encode()),
        Entry(2, 2, EntryType.NOOP, b"n1"),
        Entry(2, 3, EntryType.CONF_CHANGE, add),
        Entry(2, 4, EntryType.CONF_CHANGE, add),  # already a member: changes nothing
        Entry(2, 5, EntryType.CONF_CHANGE, promote),
        Entry(3, 6, EntryType.NOOP, b"n22"),
    ]
    for entry in entries:
        raft.on_applied(entry)
    raft.on_soft_state(SoftState("n22", Role.FOLLOWER, 3))
    assert raft.on_snapshot is not None
    raft.on_snapshot(Snapshot(SnapshotMeta(6, 3), b"abc"), False)
    got = [(index_of(e.pos), e.kind, e.data) for e in feed.journal.events()]
    assert got == [
        (1, "member_added", {"node": "n1", "address": "127.0.0.1:7402", "voter": True}),
        (2, "leader_changed", {"term": 2, "leader": "n1", "previous": None}),
        (3, "member_added", {"node": "n22", "address": "127.0.0.1:7403", "voter": False}),
        (5, "member_promoted", {"node": "n22"}),
        (6, "leader_changed", {"term": 3, "leader": "n22", "previous": "n1"}),
        (6, "term_changed", {"term": 3}),
        (6, "role_changed", {"node": "n1", "role": "follower", "term": 3}),
        (6, "snapshot_created", {"index": 6, "term": 3, "size": 3}),
    ]


# -- the service, with a fake stream --------------------------------------------------------


class FakeStream:
    """Frames in from a queue; frames out to a list; drain blocks while `stuck`."""

    def __init__(self, *frames: bytes) -> None:
        self.incoming: deque[bytes | None] = deque(frames)
        self.arrived = asyncio.Event()
        self.written: list[bytes] = []
        self.ended = False
        self.stuck = False

    async def read_frame(self) -> bytes | None:
        while not self.incoming:
            self.arrived.clear()
            await self.arrived.wait()
        return self.incoming.popleft()

    def write_frame(self, payload: bytes) -> None:
        self.written.append(payload)

    def end(self) -> None:
        self.ended = True

    async def drain(self) -> None:
        while self.stuck and not self.ended:  # the end frame itself is acknowledged
            await asyncio.sleep(3600)

    def frames(self, since: int | None = None) -> list[EventFrame]:
        reader = EventStreamReader(Subscription(since=since))
        return [reader.feed(f) for f in self.written]


class FakeConnection:
    class peer:  # what the service reads of a connection
        name = "tester"
        role = IdentityRole.READER


async def serve(service: EventService, stream: FakeStream) -> asyncio.Task[None]:
    task = asyncio.ensure_future(service.handle_stream(FakeConnection(), stream))  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    return task


def test_the_service_sends_history_then_live_events_in_order() -> None:
    async def scenario() -> None:
        journal = EventJournal()
        for index in range(1, 4):
            kv(journal, index)
        stream = FakeStream(encode_subscribe(since=log_position(1)))
        task = await serve(EventService(journal), stream)
        kv(journal, 4)
        journal.record_local("term_changed", {"term": 2})
        await asyncio.sleep(0.01)
        frames = stream.frames(since=log_position(1))
        assert [f.pos for f in frames if isinstance(f, Event)] == [
            log_position(2),
            log_position(3),
            log_position(4),
            log_position(4) + 1,
        ]
        stream.incoming.append(None)  # the subscriber ends its side
        stream.arrived.set()
        await asyncio.wait_for(task, 1)
        assert journal.subscribers == 0

    asyncio.run(scenario())


def test_a_slow_subscriber_gets_an_end_frame_and_memory_stays_bounded() -> None:
    async def scenario() -> None:
        journal = EventJournal(max_events=1000, max_lag=50)
        stream = FakeStream(encode_subscribe())
        task = await serve(EventService(journal), stream)
        stream.stuck = True
        kv(journal, 1)  # one batch goes out; the drain after it never returns
        await asyncio.sleep(0.01)
        for index in range(2, 200):
            kv(journal, index)
        await asyncio.wait_for(task, 1)
        last = stream.frames()[-1]
        assert isinstance(last, EventStreamEnd) and last.code == "slow_subscriber"
        assert stream.ended and len(stream.written) == 2 and journal.subscribers == 0

    asyncio.run(scenario())


def test_a_subscriber_that_stops_reading_over_quic_is_cut_off(tmp_path: Path) -> None:
    """Over a real connection: QUIC flow control follows the subscriber's reading, so the
    node's drain waits and the lag shows. Before, the subscriber's end took in every event
    as it arrived, each drain returned, and the node never saw that nobody read."""
    init_cluster(tmp_path, "c1")
    issue(tmp_path, "c1", "n1", IdentityRole.NODE)
    issue(tmp_path, "c1", "rd", IdentityRole.READER)
    max_frame = 2 * BATCH_BYTES  # a batch fits; the subscriber's window is then about 4 MiB

    async def scenario() -> None:
        journal = EventJournal(max_lag=50)
        service = EventService(journal)
        server = await serve_quic(
            "127.0.0.1", 0, load_identity(tmp_path, "c1", "n1"),
            {ALPN_EVENTS: service.handle_stream},
        )  # fmt: skip
        reader = load_identity(tmp_path, "c1", "rd")
        conn = await connect("127.0.0.1", server.address[1], reader, ALPN_EVENTS,
                             max_frame=max_frame)  # fmt: skip
        stream = await conn.open_stream()
        stream.write_frame(encode_subscribe())
        async with asyncio.timeout(20):
            while journal.subscribers == 0:
                await asyncio.sleep(0.01)
            index = 0
            while journal.subscribers:  # 4 KiB events until the node gives up on it
                index += 1
                kv(journal, index, value=b"x" * 4096)
                await asyncio.sleep(0)
            assert index < 5_000  # the window, a few batches, and the lag
            frames = []
            while (frame := await stream.read_frame()) is not None:
                frames.append(frame)
        ending = EventStreamReader(Subscription()).feed(frames[-1])
        assert isinstance(ending, EventStreamEnd) and ending.code == "slow_subscriber"
        conn.close()
        server.close()

    asyncio.run(scenario())


def test_a_batch_waiting_to_drain_is_bounded_in_bytes() -> None:
    """A batch was 256 events whatever their size: a subscriber of 500 KiB values had 128 MiB
    waiting in its send buffer, and every subscriber a copy of its own."""

    class Acknowledging(FakeStream):
        def __init__(self, *frames: bytes) -> None:
            super().__init__(*frames)
            self.acked = asyncio.Event()

        async def drain(self) -> None:
            await self.acked.wait()

    async def scenario() -> None:
        journal = EventJournal()
        stream = Acknowledging(encode_subscribe())
        task = await serve(EventService(journal), stream)
        for index in range(1, 101):
            kv(journal, index, value=b"x" * 500_000)
        await asyncio.sleep(0.01)
        assert 1 <= len(stream.written) <= 1 + BATCH_BYTES // 500_000
        stream.acked.set()
        async with asyncio.timeout(5):  # the rest goes out, a batch per drain, none lost
            while len(stream.written) < 100:
                await asyncio.sleep(0.01)
        sent = [f.pos if isinstance(f, Event) else f for f in stream.frames()]
        assert sent == [log_position(i) for i in range(1, 101)]
        stream.incoming.append(None)
        stream.arrived.set()
        await asyncio.wait_for(task, 1)

    asyncio.run(scenario())


def test_a_narrow_subscription_is_told_its_progress_and_resumes_from_it() -> None:
    """Before, a subscriber resumed from its last event: a quiet prefix cut off after more
    than a ring's worth of other events got compacted although it had missed nothing."""

    async def scenario() -> None:
        journal = EventJournal(max_events=PROGRESS_EVERY * 3 // 2)
        kv(journal, 1, key="watched/a")
        subscription = {"kinds": ["kv"], "prefix": "watched/", "since": 0}
        stream = FakeStream(encode_subscribe(**subscription))  # type: ignore[arg-type]
        task = await serve(EventService(journal), stream)
        for index in range(2, 2 + 3 * PROGRESS_EVERY):
            kv(journal, index, key="other")
            if index % 100 == 0:
                await asyncio.sleep(0)  # the service keeps up, as a connected one does
        await asyncio.sleep(0.01)
        stream.incoming.append(None)  # cut off here
        stream.arrived.set()
        await asyncio.wait_for(task, 1)

        reader = EventStreamReader(Subscription(frozenset({"kv"}), "watched/", 0))
        frames = [reader.feed(f) for f in stream.written]
        assert [f.pos for f in frames if isinstance(f, Event)] == [log_position(1)]
        progress = [f.pos for f in frames if isinstance(f, EventProgress)]
        # One after each PROGRESS_EVERY or more unwanted events; fewer are left unsaid.
        marks = [1, *(index_of(p) for p in progress)]
        assert len(marks) >= 3 and all(b - a >= PROGRESS_EVERY for a, b in pairwise(marks))
        assert 1 + 3 * PROGRESS_EVERY - marks[-1] < PROGRESS_EVERY
        assert reader.last == progress[-1]
        # Resuming from the last event is compacted now; from the progress it is not.
        assert isinstance(journal.subscribe(Subscription(since=log_position(1))), EventStreamEnd)
        resumed = journal.subscribe(Subscription(frozenset({"kv"}), "watched/", reader.last))
        assert isinstance(resumed, Subscriber)
        kv(journal, 2 + 3 * PROGRESS_EVERY, key="watched/b")
        assert [e.data["key"] for e in read_all(journal, resumed)] == ["watched/b"]

    asyncio.run(scenario())


def test_a_live_subscription_is_told_where_it_starts_and_resumes_from_there() -> None:
    """A live subscription (no since) had no position until its first event: cut off before
    one (its node installed a snapshot, or died), the client subscribed live again on another
    node and silently missed what happened in between (found by a review). Now it is told
    where it starts, and resumes from there like any other."""

    async def scenario() -> None:
        behind, ahead = EventJournal(), EventJournal()  # a lagging node, and one that is not
        for journal in (behind, ahead):
            journal.start(0)
            kv(journal, 1)
            journal.record_local("term_changed", {"term": 2})
        stream = FakeStream(encode_subscribe(kinds=["kv"]))
        task = await serve(EventService(behind), stream)
        for index in range(2, 5):  # committed while the subscriber waits for its node
            kv(ahead, index)
        behind.snapshot_installed(4)  # the lagging node jumps over them
        await asyncio.wait_for(task, 1)
        frames = stream.frames()
        assert [type(f) for f in frames] == [EventProgress, EventStreamEnd], frames
        start, end = frames
        assert isinstance(start, EventProgress) and start.pos == log_position(1) + 1
        assert isinstance(end, EventStreamEnd) and end.code == "compacted"
        resumed = subscribe(ahead, kinds=frozenset({"kv"}), since=start.pos)
        assert [index_of(e.pos) for e in read_all(ahead, resumed)] == [2, 3, 4]

    asyncio.run(scenario())


def test_bad_subscriptions_compacted_and_shutting_down_end_the_stream() -> None:
    async def scenario() -> None:
        journal = EventJournal()
        journal.start(10)
        service = EventService(journal)
        bad = FakeStream(b"\xa0")
        old = FakeStream(encode_subscribe(since=5))
        live = FakeStream(encode_subscribe(kinds=["kv"]))
        tasks = [await serve(service, s) for s in (bad, old, live)]
        await service.close(timeout=1)
        await asyncio.wait_for(asyncio.gather(*tasks), 1)
        codes = [s.frames()[-1] for s in (bad, old, live)]
        assert [c.code for c in codes if isinstance(c, EventStreamEnd)] == [
            "bad_request",
            "compacted",
            "shutting_down",
        ]
        assert isinstance(codes[1], EventStreamEnd) and codes[1].oldest == log_position(10)

    asyncio.run(scenario())


def test_a_traced_subscribe_is_one_server_span_that_ends_once_registered_or_refused() -> None:
    exporter = InMemorySpanExporter()
    tracing = node_tracing(NO_TELEMETRY, "n1", [exporter])
    caller = tracing.span("caller")
    tp = traceparent(caller)

    async def scenario() -> None:
        journal = EventJournal()
        journal.start(10)
        service = EventService(journal)
        service.tracing = tracing
        live = FakeStream(encode_subscribe(kinds=["kv"], prefix="app/", traceparent=tp))
        old = FakeStream(encode_subscribe(since=5, traceparent=tp))
        rootless = FakeStream(encode_subscribe())  # a subscriber that does not trace
        tasks = [await serve(service, s) for s in (live, old, rootless)]
        # The spans are over while the subscriptions go on.
        assert len(exporter.get_finished_spans()) == 3 and journal.subscribers == 2
        await service.close(timeout=1)
        await asyncio.wait_for(asyncio.gather(*tasks), 1)

    asyncio.run(scenario())
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["quicraft.events/subscribe"] * 3
    live, old, rootless = spans
    assert rootless.parent is None  # a trace of the node's own
    for span in (live, old):
        assert span.parent is not None
        assert span.parent.span_id == caller.get_span_context().span_id
    assert live.attributes is not None and live.attributes["events.kinds"] == ("kv",)
    assert live.attributes["events.prefix"] == "app/" and live.status.is_ok
    assert old.attributes is not None and old.attributes["events.since"] == 5
    assert old.status.status_code is StatusCode.ERROR
    assert old.status.description is not None and old.status.description.startswith("compacted")


@pytest.mark.parametrize("seed", range(3))
def test_random_since_never_gives_gaps_or_repeats(seed: int) -> None:
    rng = random.Random(seed)
    journal = EventJournal(max_events=200)
    index = 0
    for _ in range(500):
        if rng.random() < 0.6:
            index += rng.randint(1, 3)
            kv(journal, index)
        else:
            journal.record_local("term_changed", {"term": rng.randint(1, 9)})
    held = journal.events()
    for _ in range(50):
        since = rng.randint(journal.floor, held[-1].pos + 5)
        got = read_all(journal, subscribe(journal, since=since))
        assert got == [e for e in held if e.pos > since]
