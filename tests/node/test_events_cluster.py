"""Event streams on a real 3-node loopback cluster: kv events, resuming, roles, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import SNAPSHOT_EVERY, Cluster, run

import quicraft.client.events as client_events
from quicraft.client import Client, ClientError, EventsCompacted
from quicraft.transport import Role, issue
from quicraft.wire import Event, EventFrame, EventProgress, EventStreamReader

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the tests that leave it as they found it (each uses its own keys)."""
    made = Cluster(tmp_path_factory.mktemp("events") / "cluster")
    made.start()
    try:
        made.leader()
        issue(made.local.certs, "t1", "watcher", Role.READER)
        yield made
    finally:
        made.stop()


async def take(client: Client, count: int, timeout: float = 20, **sub: Any) -> list[Event]:
    """The first `count` events of a subscription."""
    got: list[Event] = []
    async with asyncio.timeout(timeout), contextlib.aclosing(client.events(**sub)) as events:
        async for event in events:
            got.append(event)
            if len(got) == count:
                break
    return got


def test_kv_events_carry_revision_value_and_previous(shared: Cluster) -> None:
    async def scenario() -> tuple[list[int], list[Event]]:
        async with shared.client() as c:
            revisions = [
                await c.kv.set("kv/a", b"one"),
                await c.kv.set("kv/a", b"two"),
            ]
            await c.kv.incr("kv/n", 5)
            await c.kv.cas("kv/a", b"two", b"three")
            await c.kv.cas("kv/a", b"nope", b"four")  # fails: no event
            await c.kv.delete("kv/a")
            await c.kv.set("other/x", b"1")  # outside the prefix
            events = await take(c, 5, kinds=["kv"], prefix="kv/", since=0)
            return revisions, events

    revisions, events = run(scenario())
    data = [e.data for e in events]
    assert [(d["op"], d["key"], d["value"], d["previous"]) for d in data] == [
        ("set", "kv/a", b"one", None),
        ("set", "kv/a", b"two", b"one"),
        ("incr", "kv/n", 5, None),
        ("cas", "kv/a", b"three", b"two"),
        ("delete", "kv/a", None, b"three"),
    ]
    assert [d["revision"] for d in data[:2]] == revisions
    assert [e.pos for e in events] == sorted({e.pos for e in events})
    assert all(e.pos >> 10 == e.data["revision"] for e in events)


def test_a_subscriber_that_resumes_elsewhere_misses_nothing(shared: Cluster) -> None:
    async def scenario() -> tuple[list[int], list[Event], list[Event]]:
        async with shared.client() as writer, shared.client(1) as one, shared.client(2) as two:
            acked = [await writer.kv.set(f"rs/{i}", b"%d" % i) for i in range(5)]
            first = await take(one, 5, kinds=["kv"], prefix="rs/", since=0)
            # Disconnected: these happen while nobody listens.
            acked += [await writer.kv.set(f"rs/{i}", b"%d" % i) for i in range(5, 10)]
            rest = await take(two, 5, kinds=["kv"], prefix="rs/", since=first[-1].pos)
            return acked, first, rest

    acked, first, rest = run(scenario())
    assert [e.data["revision"] for e in first + rest] == acked


def test_a_reader_identity_may_subscribe(shared: Cluster) -> None:
    async def scenario() -> list[Event]:
        async with shared.client() as admin, shared.client(name="watcher") as reader:
            await admin.kv.set("rd/x", b"seen")
            return await take(reader, 1, kinds=["kv"], prefix="rd/", since=0)

    (event,) = run(scenario())
    assert event.data["key"] == "rd/x" and event.data["value"] == b"seen"


class Lines:
    """A process's stdout, line by line, with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.queue: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout

        def pump() -> None:
            for line in stdout:
                self.queue.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def next(self, timeout: float) -> str | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def interrupt(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        assert self.process.stderr is not None
        return code, self.process.stderr.read()


def spawn(shared: Cluster, *argv: str) -> Lines:
    connection = [
        "--cluster", "t1", "--endpoints", shared.local.endpoints(),
        "--certs", str(shared.local.certs),
    ]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, *argv, *connection],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    return Lines(process)


def test_kv_watch_prints_a_change_until_ctrl_c(shared: Cluster) -> None:
    watch = spawn(shared, "-m", "quicraft.cli", "kv", "watch", "cw/", "--json")
    try:
        line = None
        deadline = time.monotonic() + 30
        while line is None and time.monotonic() < deadline:
            # Live from the moment it subscribes: write until it has seen a write.
            shared.cli("kv", "set", "cw/key", "hello")
            line = watch.next(timeout=1)
        assert line is not None, "kv watch printed nothing"
        change = json.loads(line)
        assert change["key"] == "cw/key" and change["value"] == "hello"
        assert change["op"] == "set" and change["revision"] > 0
    finally:
        code, stderr = watch.interrupt()
    assert code == 130 and "Traceback" not in stderr


def test_events_cli_prints_json_lines(shared: Cluster) -> None:
    assert shared.cli("kv", "set", "ce/key", "\u00e9t\u00e9").returncode == 0
    events = spawn(shared, "-m", "quicraft.cli", "events", "--kinds", "kv", "--prefix", "ce/")
    history = spawn(shared, "-m", "quicraft.cli", "events", "--since", "0")
    try:
        line = history.next(timeout=20)
        assert line is not None and json.loads(line)["kind"] == "member_added"
        seen = None
        deadline = time.monotonic() + 30
        while seen is None and time.monotonic() < deadline:
            shared.cli("kv", "set", "ce/key", "\u00e9t\u00e9")
            seen = events.next(timeout=1)
        assert seen is not None
        event = json.loads(seen)
        assert event["kind"] == "kv" and event["data"]["value"] == "\u00e9t\u00e9"
        assert event["data"]["previous"] == "\u00e9t\u00e9" and event["pos"] > 0
    finally:
        codes = [events.interrupt(), history.interrupt()]
    assert all(code == 130 and "Traceback" not in err for code, err in codes)


def test_events_cli_refuses_unknown_kinds(shared: Cluster) -> None:
    done = shared.cli("events", "--kinds", "kv,nope", "--cluster", "t1", "--endpoints", "x:1")
    assert done.returncode == 2 and "unknown event kind nope" in done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["events", "--prefix", "p" * 5000, "--cluster", "t1", "--endpoints", "x:1"],
        ["kv", "watch", "\udcff"],  # the byte 0xff on the command line: not UTF-8
    ],
)
def test_a_prefix_no_node_would_take_is_misuse(shared: Cluster, argv: list[str]) -> None:
    """It used to be exit 1, as if a node had refused it, and said nothing of --prefix."""
    done = shared.cli(*argv)  # (cli adds kv's connection arguments)
    assert done.returncode == 2 and "prefix" in done.stderr and "Traceback" not in done.stderr


def test_the_watch_example_prints_events(shared: Cluster) -> None:
    example = spawn(shared, str(EXAMPLES / "watch_events.py"), "--since", "0", "--count", "3")
    assert example.process.wait(timeout=30) == 0
    lines = [example.next(timeout=1) for _ in range(3)]
    assert all(line and "member_added" in line for line in lines)


def test_a_subscriber_follows_a_leader_change_without_gaps(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster")
    cluster.start()
    try:
        old = cluster.leader()
        # Every founder has its log before the leader dies: a founder still dialling its
        # peers would wait for the dead one, and two nodes could not elect (found by a run
        # under load).
        cluster.wait_all_have("probe/leader")
        others = [n for n in (1, 2, 3) if n != old]
        outcome = run(_write_through_failover(cluster, old, others))
    finally:
        cluster.stop()
    acked, unknown, events, at_kill = outcome
    writes = [(e.data["key"], e.data["revision"]) for e in events if e.kind == "kv"]
    # Every acknowledged write, in order, once; besides them only writes whose answer was
    # lost in the failover (their outcome is unknown to the writer, not to the log).
    assert [w for w in writes if w[0] in acked] == sorted(acked.items(), key=lambda w: w[1])
    assert {key for key, _ in writes} - set(acked) <= unknown
    assert len({key for key, _ in writes}) == len(writes)
    positions = [e.pos for e in events]
    assert positions == sorted(set(positions))
    before = [e.data for e in events[:at_kill] if e.kind == "leader_changed"]
    after = [e.data for e in events[at_kill:] if e.kind == "leader_changed"]
    assert before and after, "no leader_changed before and after the kill"
    assert after[-1]["leader"] not in (None, before[-1]["leader"])
    assert after[-1]["term"] > before[-1]["term"]
    assert after[0]["previous"] == before[-1]["leader"]


async def _write_through_failover(
    cluster: Cluster, old: int, others: list[int]
) -> tuple[dict[str, int], set[str], list[Event], int]:
    """Writes (each to a new key) before and after killing the leader `old`, and what a
    subscriber that started on `old` saw: (acknowledged key -> revision, keys whose write
    failed, events, how many events came before the kill)."""
    events: list[Event] = []
    arrived = asyncio.Event()
    acked: dict[str, int] = {}
    unknown: set[str] = set()

    async def collect(client: Client) -> None:
        subscription = client.events(kinds=["kv", "leader_changed"], prefix="fo/", since=0)
        async with contextlib.aclosing(subscription):
            async for event in subscription:
                events.append(event)
                arrived.set()

    async def seen(revision: int) -> None:
        async with asyncio.timeout(30):
            while not any(e.data.get("revision") == revision for e in events):
                arrived.clear()
                await arrived.wait()

    async def write(writer: Client, count: int) -> None:
        goal = len(acked) + count
        while len(acked) < goal:
            key = f"fo/{len(acked) + len(unknown):03d}"
            try:
                acked[key] = await writer.kv.set(key, b"x")
            except ClientError:
                unknown.add(key)  # a request stuck on the dead leader: applied or not

    async with (
        cluster.client(old, *others) as sub,
        cluster.client(timeout=2) as writer,
        asyncio.timeout(120),  # a cluster that never recovers fails the test, not hangs it
    ):
        task = asyncio.create_task(collect(sub))
        try:
            await write(writer, 10)
            await seen(max(acked.values()))  # the subscriber is on the old leader, caught up
            at_kill = len(events)
            await asyncio.to_thread(cluster.kill, old)
            await write(writer, 10)
            await seen(max(acked.values()))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return acked, unknown, events, at_kill


def test_since_older_than_a_restarted_node_holds_is_compacted(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster")
    cluster.start()
    try:
        follower = next(n for n in (1, 2, 3) if n != cluster.leader())

        async def fill() -> None:
            async with cluster.client() as c:
                # Past 5/3 SNAPSHOT_EVERY: every node snapshots (each at its own point).
                for i in range(2 * SNAPSHOT_EVERY):
                    await c.kv.set(f"cp/{i}", b"v")

        run(fill())
        cluster.kill(follower)
        cluster.start(follower)

        async def subscribe() -> tuple[EventsCompacted, list[Event]]:
            async with cluster.client(follower) as one, cluster.client() as writer:
                with pytest.raises(EventsCompacted) as refused:
                    await take(one, 1, kinds=["kv"], since=0)
                oldest = refused.value.oldest
                assert oldest is not None
                await writer.kv.set("cp/after", b"v")
                return refused.value, await take(one, 1, kinds=["kv"], since=oldest)

        refusal, after = run(subscribe())
    finally:
        cluster.stop()
    assert refusal.code == "compacted" and refusal.oldest and refusal.oldest > 0
    assert after[0].pos > refusal.oldest and after[0].data["key"].startswith("cp/")


def test_a_live_subscriber_whose_node_dies_before_any_event_misses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live subscription had no position before its first event: its node killed, the
    client subscribed live on the next one once it noticed (an idle timeout later) and
    silently missed the writes made meanwhile (found by a review). The node now tells it
    where it starts, and it resumes from there."""
    positions: list[int] = []  # of the progress frames the subscriber read: its start first

    class Reader(EventStreamReader):
        def feed(self, data: bytes) -> EventFrame:
            frame = super().feed(data)
            if isinstance(frame, EventProgress):
                positions.append(frame.pos)
            return frame

    monkeypatch.setattr(client_events, "EventStreamReader", Reader)
    cluster = Cluster(tmp_path / "cluster")
    cluster.start()
    try:
        leader = cluster.leader()
        cluster.wait_all_have("probe/leader")  # two nodes can elect once one is gone
        doomed, other = (n for n in (1, 2, 3) if n != leader)

        def subscribed_on_doomed() -> bool:
            # The node logs the subscription once it has read it: the client was on `doomed`
            # (its first endpoint) and not on `other`, which it dials only if that failed.
            return bool(positions) and " subscribed: " in cluster.log(doomed)

        async def scenario() -> tuple[list[int], list[Event]]:
            async with cluster.client(doomed, other) as sub, cluster.client(leader) as writer:
                events = asyncio.create_task(take(sub, 3, timeout=30, kinds=["kv"], prefix="lv/"))
                async with asyncio.timeout(30):  # however slow the machine: not a fixed sleep
                    while not subscribed_on_doomed():
                        await asyncio.sleep(0.05)
                assert not events.done(), events
                await asyncio.to_thread(cluster.kill, doomed)
                acked = [await writer.kv.set(f"lv/{i}", b"x") for i in range(3)]
                return acked, await events

        acked, events = run(scenario())
    finally:
        cluster.stop()
    assert [e.data["revision"] for e in events] == acked
