"""A node under bad input: strangers, garbage, damaged data, a second process, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cbor2
import plyvel  # type: ignore[import-untyped]
import pytest
from cluster_harness import Cluster, run

from quicraft.client import ClientError, connect
from quicraft.transport import (
    ALPN_CLIENT,
    ALPN_RAFT,
    RefusedError,
    Role,
    TransportError,
    init_cluster,
    issue,
    load_identity,
)
from quicraft.transport import connect as quic_connect
from quicraft.wire import decode_response, encode_request


def _refused_write(cluster: Cluster, certs: Path, cluster_name: str, name: str) -> str:
    async def attempt() -> str:
        endpoints = cluster.local.endpoints()
        async with connect(endpoints, cluster_name, certs, name, timeout=3) as c:
            try:
                await c.kv.set("intruder", b"was here")
            except ClientError as err:
                return err.code
        raise AssertionError("a stranger could write")

    return str(run(attempt()))


def test_strangers_are_refused_and_change_nothing(cluster: Cluster, tmp_path: Path) -> None:
    # A CA of its own, calling itself the same cluster.
    init_cluster(tmp_path / "other-ca", "t1")
    assert _refused_write(cluster, tmp_path / "other-ca", "t1", "admin") == "forbidden"
    # The right CA signs only cluster t1; a cluster named otherwise is another CA anyway, so
    # make a genuine identity of "t2" under our CA folder to prove the name is checked too.
    init_cluster(tmp_path / "t2-ca", "t2")
    assert _refused_write(cluster, tmp_path / "t2-ca", "t2", "admin") == "forbidden"

    async def reader_on_raft() -> None:
        issue(cluster.local.certs, "t1", "peeker", Role.READER)
        identity = load_identity(cluster.local.certs, "t1", "peeker")
        host, port = "127.0.0.1", cluster.nodes[0].port
        with pytest.raises(RefusedError):
            await quic_connect(host, port, identity, ALPN_RAFT, timeout=3)

    run(reader_on_raft())

    async def untouched() -> None:
        async with cluster.client() as c:
            assert await c.kv.get("intruder") is None

    run(untouched())
    assert "refused" in cluster.log(1)


def test_garbage_datagrams_and_malformed_frames_do_not_crash_a_node(cluster: Cluster) -> None:
    port = cluster.nodes[0].port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for size in (0, 1, 20, 1200, 1500):
            for fill in (b"\x00", b"\xff", b"\xc3"):
                s.sendto(fill * size, ("127.0.0.1", port))

    async def malformed_frames() -> None:
        identity = load_identity(cluster.local.certs, "t1", "admin")
        conn = await quic_connect("127.0.0.1", port, identity, ALPN_CLIENT, timeout=5)
        # A well-framed request with an id but an unknown op: that request is answered with
        # bad_request and the stream serves the next one.
        stream = await conn.open_stream()
        stream.write_frame(cbor2.dumps({"v": 1, "id": 9, "op": "drop_all", "args": {}}))
        stream.write_frame(encode_request("keys", {"stale": True}, id=10))
        stream.end()
        answers = [await asyncio.wait_for(stream.read_frame(), 5) for _ in range(2)]
        first, second = (decode_response(a) for a in answers if a is not None)
        assert first.id == 9 and first.error is not None and first.error.code == "bad_request"
        assert second.id == 10 and second.ok
        # A request whose id cannot be read (an unknown version) cannot be answered: reset.
        stream = await conn.open_stream()
        stream.write_frame(b"\xa1\x61v\x02")
        stream.end()
        with pytest.raises(TransportError, match="reset"):
            await asyncio.wait_for(stream.read_frame(), 5)
        # Bytes that are not frames at all (a length beyond every bound, then junk): that
        # stream is reset or ended without an answer, and the connection stays usable.
        for payload in (b"\x7f\xff\xff\xff" + b"\x00" * 8, b"\xff" * 40):
            stream = await conn.open_stream()
            stream._link.send(stream.stream_id, payload, True)  # raw bytes, not a frame
            with contextlib.suppress(TransportError):  # reset: what a protocol error should do
                assert await asyncio.wait_for(stream.read_frame(), 5) is None
        conn.close()

    run(malformed_frames())

    async def still_serving() -> None:
        async with cluster.client(1) as c:
            await c.kv.set("after-garbage", b"ok")
            assert await c.kv.get("after-garbage") == b"ok"

    run(still_serving())
    assert cluster.local.running(cluster.nodes[0])


def test_a_second_process_on_the_same_data_directory_is_refused(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    argv = cluster.local.command(node)
    argv[argv.index("--listen") + 1] = "127.0.0.1:1"  # would not get this far anyway
    second = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert "in use by another process" in second.stderr
    assert "Traceback" not in second.stderr


def test_a_corrupted_record_stops_the_node_with_a_message(cluster: Cluster) -> None:
    async def write() -> None:
        async with cluster.client() as c:
            await c.kv.set("k", b"v")

    run(write())
    cluster.stop()
    data = cluster.local.folder / "n2" / "data"
    db = plyvel.DB(str(data))
    key = max(k for k, _ in db.iterator() if k.startswith(b"E"))
    value = db.get(key)
    db.put(key, value[:-1] + bytes([value[-1] ^ 0xFF]))
    db.close()
    argv = cluster.local.command(cluster.nodes[1])
    started = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert started.returncode == 1
    assert "checksum mismatch" in started.stderr and "log entry" in started.stderr
    assert "Traceback" not in started.stderr


def test_a_log_lost_behind_its_commit_index_stops_the_node_with_a_message(
    cluster: Cluster,
) -> None:
    cluster.stop()
    data = cluster.local.folder / "n2" / "data"
    db = plyvel.DB(str(data))
    for key in [k for k, _ in db.iterator() if k.startswith(b"E")]:
        db.delete(key)  # every record left is sound, but the committed entries are gone
    db.close()
    started = subprocess.run(
        cluster.local.command(cluster.nodes[1]), capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 1
    assert "is beyond the stored log" in started.stderr
    assert "Traceback" not in started.stderr


def test_sigterm_on_the_leader_hands_leadership_over(cluster: Cluster) -> None:
    leader = cluster.leader()
    node = cluster.local.node(leader)
    cluster.local.kill(node, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while cluster.local.running(node):
        assert time.monotonic() < deadline, "the node did not stop on SIGTERM"
        time.sleep(0.05)
    assert "handing leadership over to" in cluster.log(leader)
    assert cluster.leader() != leader


def test_kv_shell_runs_commands_and_help(cluster: Cluster) -> None:
    script = "set colour blue\nget colour\nincr visits\nkeys\nhelp set\nbogus\nget nothing\nkeys\n"
    shell = subprocess.run(
        [sys.executable, "-m", "quicraft.cli", "kv", "shell", "--cluster", "t1",
         "--endpoints", cluster.local.endpoints(), "--certs", str(cluster.local.certs)],
        input=script, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shell.returncode == 1, shell.stderr  # a script, and two of its commands failed
    lines = shell.stdout
    assert lines.startswith("OK (revision")  # no prompt: stdin is not a terminal
    assert "\nblue\n1\ncolour\nprobe/leader\nvisits\n" in lines
    assert "usage: set [-h] key value" in lines
    assert lines.endswith("\ncolour\nprobe/leader\nvisits\n")  # and the shell goes on
    assert shell.stderr == (
        "error: unknown command 'bogus'; 'help' lists them\nerror: key 'nothing' not found\n"
    )


def test_a_node_started_on_another_nodes_data_directory_is_refused(cluster: Cluster) -> None:
    """Before, it ran as that store's node without a word (found by a review on 2026-12-02)."""
    cluster.kill(2)
    argv = cluster.local.command(cluster.nodes[0])  # n1's key ...
    n2 = cluster.local.command(cluster.nodes[1])
    for flag in ("--data", "--listen", "--peers"):  # ... n2's data, where n2 served
        argv[argv.index(flag) + 1] = n2[n2.index(flag) + 1]
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1, refused.stderr
    assert "holds the data of node n2 (" in refused.stderr
    assert "not of node n1 (" in refused.stderr
    assert "give each node its own --data" in refused.stderr
    assert "Traceback" not in refused.stderr
    cluster.start(2)  # its own node still starts on it
    run(_wait_all_serve(cluster))


async def _wait_all_serve(cluster: Cluster) -> None:
    async with cluster.client(2) as c:
        assert await c.kv.get("nothing/here", stale=True) is None
