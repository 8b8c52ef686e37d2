"""A 3-node cluster of real processes: serving, crashes, snapshots and exactly-once writes."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from cluster_harness import SNAPSHOT_EVERY, Cluster, eventually_write, parse_json, run

from quicraft.client import ClientError, InvalidRequest


def test_a_value_that_is_not_utf8_is_stored_as_the_bytes_given(cluster: Cluster) -> None:
    """argv is bytes: `kv set` stores exactly those (found by a review: a traceback)."""
    put = cluster.cli("kv", "set", "raw", os.fsdecode(b"\xff\xfe"))
    assert put.returncode == 0, put.stderr

    async def read_back() -> None:
        async with cluster.client() as c:
            assert await c.kv.get("raw") == b"\xff\xfe"

    run(read_back())


def test_serves_the_cli_and_the_python_client(cluster: Cluster) -> None:
    put = cluster.cli("kv", "set", "greeting", "hello", "--json")
    assert put.returncode == 0, put.stderr
    revision = parse_json(put.stdout)["revision"]
    assert revision > 0

    got = cluster.cli("kv", "get", "greeting", "--json")
    assert got.returncode == 0, got.stderr
    assert parse_json(got.stdout) == {
        "key": "greeting", "found": True, "revision": revision, "value": "hello"
    }  # fmt: skip
    assert cluster.cli("kv", "get", "greeting").stdout.strip() == "hello"

    async def python_client() -> None:
        async with cluster.client() as c:
            assert await c.kv.get("greeting") == b"hello"
            assert await c.kv.incr("counter") == 1
            assert await c.kv.incr("counter", 5) == 6
            assert await c.kv.cas("greeting", b"hello", b"bonjour") is True
            assert await c.kv.cas("greeting", b"hello", b"hallo") is False
            assert await c.kv.keys("") == ["counter", "greeting", "probe/leader"]
            assert await c.kv.delete("counter") is True
            assert await c.kv.delete("counter") is False
            assert await c.kv.get("counter") is None
            # Many tasks share the client's one connection and stream: each gets its answer.
            totals = await asyncio.gather(*(c.kv.incr("shared") for _ in range(200)))
            assert sorted(totals) == list(range(1, 201))
            reads = await asyncio.gather(*(c.kv.get("shared") for _ in range(50)))
            assert reads == [b"200"] * 50

    run(python_client())
    assert cluster.cli("kv", "get", "greeting").stdout.strip() == "bonjour"
    missing = cluster.cli("kv", "get", "nothing-here")
    assert missing.returncode == 1 and missing.stdout == "", missing.stdout  # only values
    assert missing.stderr == "quicraft: error: key 'nothing-here' not found\n"
    assert cluster.cli("kv", "incr", "greeting").returncode == 1  # not a number
    # Arguments no node accepts fail at once as misuse (found by a review: they waited for the
    # timeout and said "timeout").
    for argv in (["get", ""], ["set", "k" * 5000, "v"], ["incr", "n", str(2**63)]):
        refused = cluster.cli("kv", *argv)
        assert refused.returncode == 2 and "(bad_request)" in refused.stderr, refused.stderr

    async def refused_in_python() -> None:
        async with cluster.client(timeout=60) as c:
            started = time.monotonic()
            with pytest.raises(InvalidRequest, match="'key' must be a str of 1 to 4096"):
                await c.kv.set("", b"v")
            assert time.monotonic() - started < 30  # not the 60-second timeout

    run(refused_in_python())
    assert cluster.cli("kv", "frobnicate").returncode == 2


#: Every write op of the client protocol, with args a writer may send.
READER_MAY_NOT: dict[str, dict[str, object]] = {
    "register": {},
    "set": {"key": "k", "value": b"changed"},
    "delete": {"key": "k"},
    "incr": {"key": "n", "by": 1},
    "cas": {"key": "k", "expected": b"v", "new": b"changed"},
}


def test_every_op_is_a_read_or_a_write_a_reader_may_not_make() -> None:
    """The client service lets a reader make any op it does not list as a write."""
    from quicraft.node.service import READS, WRITES
    from quicraft.wire.ops import OPS

    assert set(OPS) == READS | WRITES and not READS & WRITES
    assert set(READER_MAY_NOT) == WRITES


def test_a_reader_may_read_but_not_write(cluster: Cluster) -> None:
    from quicraft.transport import Role, issue

    issue(cluster.local.certs, "t1", "viewer", Role.READER)

    async def scenario() -> None:
        async with cluster.client() as admin:
            await admin.kv.set("k", b"v")
        async with cluster.client(name="viewer") as viewer:
            assert await viewer.kv.get("k") == b"v"
            try:
                await viewer.kv.set("k", b"changed")
            except ClientError as err:
                assert err.code == "forbidden"
            else:
                raise AssertionError("a reader wrote")
            # The client library registers a session before its first write, and that was
            # all a reader's write tried: send each write op as is, with no session.
            for op, args in READER_MAY_NOT.items():
                with pytest.raises(ClientError) as refused:
                    await viewer.call(op, args)
                assert refused.value.code == "forbidden", op
        async with cluster.client() as admin:
            assert await admin.kv.get("k") == b"v"
            assert await admin.kv.get("n") is None

    run(scenario())


def test_killing_the_leader_elects_another_and_loses_no_acknowledged_write(
    cluster: Cluster,
) -> None:
    acknowledged: dict[str, bytes] = {}

    async def write(prefix: str, count: int) -> None:
        async with cluster.client() as c:
            for i in range(count):
                key, value = f"{prefix}/{i}", f"v{i}".encode()
                await eventually_write(c, key, value)
                acknowledged[key] = value

    run(write("before", 20))
    leader = cluster.leader()
    cluster.kill(leader)
    run(write("after", 20))
    assert cluster.leader() != leader

    async def check() -> None:
        async with cluster.client() as c:
            for key, value in acknowledged.items():
                assert await c.kv.get(key) == value, key

    run(check())
    cluster.start(leader)  # the old leader rejoins as a follower and catches up

    async def caught_up() -> None:
        async with cluster.client(leader) as c:
            deadline = time.monotonic() + 20
            while await c.kv.get("after/19", stale=True) != b"v19":
                assert time.monotonic() < deadline, "the old leader did not catch up"
                await asyncio.sleep(0.1)

    run(caught_up())


def test_kill_all_during_writes_then_restart_keeps_every_acknowledged_write(
    cluster: Cluster,
) -> None:
    acknowledged: dict[str, bytes] = {}

    async def writer(number: int) -> None:
        async with cluster.client(timeout=5) as c:
            for i in range(1000):
                key = f"w{number}/{i}"
                try:
                    await c.kv.set(key, b"x%d" % i)
                except ClientError:
                    return
                acknowledged[key] = b"x%d" % i

    async def crash_during_writes() -> None:
        writers = [asyncio.create_task(writer(n)) for n in range(4)]
        while len(acknowledged) < 100:
            await asyncio.sleep(0.01)
        for number in range(1, 4):
            cluster.kill(number)
        await asyncio.gather(*writers)

    run(crash_during_writes())
    assert len(acknowledged) >= 100
    cluster.start()

    async def check() -> None:
        async with cluster.client() as c:
            for key, value in acknowledged.items():
                assert await c.kv.get(key) == value, key

    run(check())


def test_a_follower_far_behind_gets_a_snapshot(cluster: Cluster) -> None:
    leader = cluster.leader()
    behind = next(n for n in (1, 2, 3) if n != leader)
    cluster.kill(behind)

    async def write_many() -> None:
        async with cluster.client() as c:
            for i in range(3 * SNAPSHOT_EVERY):
                await eventually_write(c, f"k{i % 10}", b"%d" % i)

    run(write_many())
    cluster.start(behind)

    async def caught_up() -> None:
        async with cluster.client(behind) as c:
            deadline = time.monotonic() + 20
            last = b"%d" % (3 * SNAPSHOT_EVERY - 1)
            while await c.kv.get(f"k{(3 * SNAPSHOT_EVERY - 1) % 10}", stale=True) != last:
                assert time.monotonic() < deadline, "the follower did not catch up"
                await asyncio.sleep(0.1)

    run(caught_up())
    assert "installed a snapshot" in cluster.log(behind)


def test_a_retried_write_across_a_leader_change_is_applied_once(cluster: Cluster) -> None:
    async def first_attempt() -> tuple[int, int]:
        async with cluster.client() as c:
            session = int((await c.call("register", {}))["session"])
            result = await c.call("incr", {"key": "n", "by": 1, "session": session, "seq": 1})
            return session, int(result["value"])

    session, value = run(first_attempt())
    assert value == 1
    cluster.kill(cluster.leader())

    async def retry() -> None:
        async with cluster.client() as c:
            # The same (session, seq) again, on the new leader: the first result, no new effect.
            again = await c.call("incr", {"key": "n", "by": 1, "session": session, "seq": 1})
            assert int(again["value"]) == 1
            assert await c.kv.get("n") == b"1"
            following = await c.call("incr", {"key": "n", "by": 1, "session": session, "seq": 2})
            assert int(following["value"]) == 2

    run(retry())
