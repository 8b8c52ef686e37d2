"""Snapshots, backups and the offline restore: backup → restore → a new one-node cluster."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import small_disks
from cluster_harness import Cluster, eventually_write, free_base_port, run
from mgmt_helpers import ExtraNode, admin, mgmt, mgmt_json

from quicraft.client import MgmtClient, MgmtError, connect, connect_mgmt
from quicraft.core import Membership, Snapshot, SnapshotMeta
from quicraft.node.data_owner import DataOwner
from quicraft.node.mgmt import MgmtService
from quicraft.node.restore import RestoreError, restore_backup
from quicraft.node.runtime import RequestTimeout
from quicraft.statemachine import FOUND_OP, KVStore, encode_command
from quicraft.storage import LevelDBStorage, StorageError
from quicraft.transport import init_cluster
from quicraft.wire import (
    BackupInfo,
    BackupSender,
    MgmtResponse,
    decode_mgmt_response,
    verify_backup,
    write_backup,
)


def restore(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "quicraft.cli", "mgmt", "restore", *args,
        "--cluster", "t1", "--certs", str(cluster.local.certs),
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_snapshot_backup_and_restore(cluster: Cluster, tmp_path: Path) -> None:
    async def write() -> None:
        async with cluster.client() as c:
            for i in range(20):
                await eventually_write(c, f"k/{i:02}", f"v{i}".encode())

    run(write())
    snapped = mgmt_json(cluster, "snapshot")
    assert snapped["index"] >= 20

    # CLI backup: stderr is not a terminal, so no progress bar, just the summary line.
    backup = tmp_path / "t1.qrbackup"
    done = mgmt(cluster, "backup", str(backup))
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and f"written to {backup}" in done.stdout
    with backup.open("rb") as fp:
        info = verify_backup(fp)
    assert info.cluster == "t1" and info.index >= snapped["index"] and len(info.voters) == 3
    assert list(tmp_path.glob("*.part")) == []
    assert backup.stat().st_mode & 0o777 == 0o600  # it holds every value of the store
    sent = f"sent a backup at index {info.index} ("
    assert any(sent in cluster.log(n) for n in (1, 2, 3)), "no node logged the backup it sent"
    # An existing file is not replaced without --force.
    before = backup.read_bytes()
    kept = mgmt(cluster, "backup", str(backup))
    assert kept.returncode == 1 and backup.read_bytes() == before
    assert kept.stderr == f"quicraft: error: {backup} exists already (--force replaces it)\n"
    # A backup writes a .part file of its own: one that a killed backup left, or a link
    # someone put where a shared FILE.part was written, is neither in the way nor touched.
    target = tmp_path / "someone's file"
    target.write_text("theirs")
    (tmp_path / "t1.qrbackup.part").symlink_to(target)
    (tmp_path / "t1.qrbackup.x1.part").write_bytes(b"left by a killed backup")
    replaced = mgmt(cluster, "backup", str(backup), "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert target.read_text() == "theirs" and (tmp_path / "t1.qrbackup.part").is_symlink()
    assert sorted(p.name for p in tmp_path.glob("*.part")) == [
        "t1.qrbackup.part", "t1.qrbackup.x1.part"
    ]  # fmt: skip
    with backup.open("rb") as fp:
        assert verify_backup(fp).index >= info.index

    # Two backups at once to one FILE: each writes its own .part, and FILE is a whole one.
    async def two_at_once() -> list[BackupInfo]:
        async with admin(cluster) as m:
            return list(await asyncio.gather(*(m.backup(backup, replace=True) for _ in "ab")))

    written = run(two_at_once())
    with backup.open("rb") as fp:
        assert verify_backup(fp).index in {w.index for w in written}
    assert len(list(tmp_path.glob("*.part"))) == 2  # the two kept above, no more
    # A destination that cannot be written is misuse, told before anything is streamed;
    # --force replaces only a file (a rename would replace a FIFO, a device, a link).
    fifo, link = tmp_path / "fifo", tmp_path / "link"
    os.mkfifo(fifo)
    link.symlink_to(backup)
    for where, why in [
        (tmp_path / "no" / "such.qrbackup", "its directory does not exist"),
        (backup / "under-a-file.qrbackup", f"{backup} is not a directory"),
        (tmp_path, "it is a directory"),
        (fifo, "it is not a regular file, and a backup replaces only a file"),
        (link, "it is not a regular file, and a backup replaces only a file"),
    ]:
        refused = mgmt(cluster, "backup", str(where), "--force")
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr == f"quicraft mgmt backup: cannot write {where}: {why}\n"
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()

    # Python backup with progress: everything written before it is in it.
    seen: list[tuple[int, int]] = []

    async def python_backup() -> None:
        async with cluster.client() as c:
            await eventually_write(c, "last", b"before the backup")
        async with admin(cluster) as m:
            got = await m.backup(
                tmp_path / "py.qrbackup", progress=lambda d, s: seen.append((d, s))
            )
            with pytest.raises(FileExistsError, match="not a regular file"):
                await m.backup(fifo, replace=True)
        assert got.index > info.index

    run(python_backup())
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] > 0

    # Offline restore into a fresh directory, as a new node "r1" (its key is issued here).
    data = tmp_path / "restored" / "data"
    restored = restore(cluster, str(tmp_path / "py.qrbackup"), "--data", str(data),
                       "--name", "r1", "--json")  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    result = json.loads(restored.stdout)
    assert result["index"] > info.index and result["data"] == str(data)
    refused = restore(cluster, str(backup), "--data", str(data), "--name", "r1")
    assert refused.returncode == 1 and "not an empty directory" in refused.stderr
    damaged = tmp_path / "damaged.qrbackup"
    raw = bytearray(backup.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    bad = restore(cluster, str(damaged), "--data", str(tmp_path / "other"), "--name", "r1")
    assert bad.returncode == 1 and "corrupted" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "other").exists()
    with pytest.raises(RestoreError, match="is a backup of cluster 't1', not 't2'"):
        restore_backup(backup, tmp_path / "other", DataOwner(result["node"], "r1", "t2"))
    assert result["cluster_id"] is None and result["new_cluster_id"] is None  # --peers: no id
    assert not (tmp_path / "other").exists()

    node = ExtraNode(cluster, "r1", data)
    try:
        node.wait_for_log("listening on")

        async def read_back() -> None:
            async with connect([node.address], "t1", cluster.local.certs, timeout=20) as c:
                assert await c.kv.get("k/07") == b"v7"
                assert await c.kv.get("last") == b"before the backup"
                await c.kv.set("new", b"cluster")  # it leads a cluster of its own
            async with connect_mgmt([node.address], "t1", cluster.local.certs, timeout=20) as m:
                status = await m.status()
            assert [x["name"] for x in status["members"]] == ["r1"]
            assert status["leader"] == result["node"]

        run(read_back())
    finally:
        node.stop()


def test_a_backup_from_a_node_that_stops_answering_fails_within_seconds(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A backup reads a stream of its own, which the channel's watch of waiting requests
    did not cover: from a node frozen or killed mid-way it waited for its whole 60 s
    budget. Now its node is asked for an acknowledgement and, silent, the backup fails."""
    frozen = cluster.local.node(2)
    backup = tmp_path / "b.qrbackup"

    async def scenario() -> None:
        async with admin(cluster, 2, follow=False) as m:
            await m.status()  # the channel to node 2 is up
            os.kill(frozen.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(MgmtError, match="sent nothing for"):
                    await m.backup(backup)
                assert time.monotonic() - started < 10
            finally:
                os.kill(frozen.pid, signal.SIGCONT)

    run(scenario())
    assert not backup.exists() and list(backup.parent.glob("*.part")) == []


def test_a_backup_whose_first_endpoint_is_down_is_taken_from_the_next(
    cluster: Cluster, tmp_path: Path
) -> None:
    """`mgmt backup --endpoints DOWN,UP` failed at once ("DOWN is unreachable") where every
    other operation goes on to the next endpoint: any live node will do (operations.md)."""
    down = ("127.0.0.1", free_base_port(1) + 1)  # nothing listens there
    backup = tmp_path / "b.qrbackup"

    async def scenario() -> BackupInfo:
        endpoints = [f"{down[0]}:{down[1]}", cluster.local.node(1).address]
        async with connect_mgmt(endpoints, "t1", cluster.local.certs, timeout=20) as m:
            return await m.backup(backup)

    info = run(scenario())
    assert backup.exists() and info.index >= 1


def test_a_backup_with_no_node_reachable_gives_up_after_the_timeout(tmp_path: Path) -> None:
    """As a request does: it tries the endpoints until its timeout, then says it gave up."""
    certs = tmp_path / "certs"
    init_cluster(certs, "t1")
    down = f"127.0.0.1:{free_base_port(1) + 1}"

    async def scenario() -> None:
        async with connect_mgmt(down, "t1", certs, timeout=1.5) as m:
            started = time.monotonic()
            with pytest.raises(MgmtError, match=r"gave up after 1\.5s") as failed:
                await m.backup(tmp_path / "b.qrbackup")
            assert failed.value.code == "timeout"
            assert 1.4 < time.monotonic() - started < 5

    run(scenario())
    assert list(tmp_path.iterdir()) == [certs]


def test_the_progress_bar_redraws_one_line() -> None:
    import io

    from quicraft.cli.mgmt import _ProgressBar

    out = io.StringIO()
    bar = _ProgressBar(out)
    bar(0, 4 * 1024 * 1024)
    bar(2 * 1024 * 1024, 4 * 1024 * 1024)
    bar.done()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "[###############...............]  50% 2.0 MiB / 4.0 MiB" in text


def test_a_backup_the_known_leader_does_not_confirm_is_refused() -> None:
    """With a leader known, a backup waits for it to confirm that this node holds every
    committed write; if it does not, the node answers an error rather than stream what may
    miss acknowledged writes (found by a review). Without a leader it streams what it has."""
    snapshot = Snapshot(SnapshotMeta(7, 2, Membership(frozenset({"a", "b", "c"}))), b"state")
    core = SimpleNamespace(leader="b", log=SimpleNamespace(snapshot=snapshot))

    def start_read(timeout: float) -> asyncio.Future[None]:
        unconfirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        unconfirmed.set_exception(RequestTimeout("no leader confirmed the read in time"))
        return unconfirmed

    async def take_snapshot() -> int:
        return 7

    node = SimpleNamespace(id="a", core=core, start_read=start_read, snapshot=take_snapshot)
    service = MgmtService(
        node,  # type: ignore[arg-type]
        SimpleNamespace(),  # type: ignore[arg-type]
        name="n1",
        address_of=lambda peer: None,
        save_addresses=lambda: None,
        request_timeout=0.1,
    )

    def backup_answer() -> MgmtResponse:
        frames: list[bytes] = []
        stream = SimpleNamespace(
            write_frame=frames.append, end=lambda: None, drain=lambda: asyncio.sleep(0)
        )
        request = SimpleNamespace(id=1, op="backup", args={}, traceparent=None)
        asyncio.run(service._backup(request, stream))  # type: ignore[arg-type]
        return decode_mgmt_response(frames[0], "backup")

    refused = backup_answer()
    assert refused.error is not None and refused.error.code == "unavailable"
    assert "did not confirm" in refused.error.message
    core.leader = None  # quorum lost: the node's own state is still worth saving
    assert backup_answer().ok


def test_a_restored_cluster_gets_a_new_cluster_id(tmp_path: Path) -> None:
    """A cluster formed on a LAN has an id; the one restored from its backup is another
    cluster and must not pass for it (both running, the name's split is then reported).
    Everything else in the state, sessions included, is restored as it was."""
    store = KVStore()
    commands: list[tuple[str, dict[str, object]]] = [
        (FOUND_OP, {"cluster_id": "ab12" * 8}),
        ("register", {}),
        ("set", {"key": "k", "value": b"v", "session": 2, "seq": 0}),
        ("address", {"node": "n1", "address": "10.0.0.1:7400"}),
    ]
    for index, (op, args) in enumerate(commands, start=1):
        store.apply(index, encode_command(op, args, 1000 * index))
    data = store.snapshot()
    info = BackupInfo("c1", "ab12" * 8, 4, 1, frozenset({"n1"}), frozenset(), 0, len(data))
    backup = tmp_path / "c1.qrbackup"
    with backup.open("wb") as fp:
        write_backup(fp, info, [data])

    owner = DataOwner("r1id", "r1", "c1")
    restored = restore_backup(backup, tmp_path / "data", owner)
    assert restored.info == info
    assert restored.cluster_id is not None and restored.cluster_id != "ab12" * 8
    storage = LevelDBStorage(tmp_path / "data")
    try:
        snapshot = storage.load().snapshot
    finally:
        storage.close()
    assert snapshot is not None
    again = KVStore()
    again.restore(snapshot.data)
    assert again.cluster_id == restored.cluster_id
    assert again.get("k") == (b"v", 3) and 2 in again.sessions
    assert again.addresses == {"n1": "10.0.0.1:7400"}
    assert again.snapshot() == store.snapshot().replace(
        b"ab12" * 8, restored.cluster_id.encode()
    )  # the same bytes but for the id: keys, sessions and addresses as they were


def test_a_backup_whose_state_is_not_the_stores_is_refused(tmp_path: Path) -> None:
    info = BackupInfo("c1", None, 4, 1, frozenset({"n1"}), frozenset(), 0, 8)
    backup = tmp_path / "c1.qrbackup"
    with backup.open("wb") as fp:
        write_backup(fp, info, [b"not cbor"])
    with pytest.raises(RestoreError, match="holds no state quicraft can restore"):
        restore_backup(backup, tmp_path / "data", DataOwner("r1id", "r1", "c1"))
    assert not (tmp_path / "data").exists()


def backup_applied_to_4(path: Path, index: int, term: int) -> None:
    """A backup file at `index` and `term` whose state was applied up to index 4."""
    store = KVStore()
    for at in range(1, 5):
        store.apply(at, encode_command("set", {"key": f"k{at}", "value": b"v"}, 1000))
    data = store.snapshot()
    info = BackupInfo("c1", None, index, term, frozenset({"n1"}), frozenset(), 0, len(data))
    with path.open("wb") as fp:
        write_backup(fp, info, [data])


@pytest.mark.parametrize(("index", "term"), [(3, 1), (4, 0), (1 << 63, 1), ((1 << 64) - 1, 1)])
def test_a_backup_whose_header_contradicts_its_state_is_refused(
    tmp_path: Path, index: int, term: int
) -> None:
    """Its digest shows the file is as written, not that quicraft wrote it: a header made by
    hand must agree with the state (applied up to 4 here). Index 2^64-1 restored, and the
    node then stopped on a struct.error."""
    backup = tmp_path / "c1.qrbackup"
    backup_applied_to_4(backup, index, term)
    with pytest.raises(RestoreError, match="contradicts itself: its header says index"):
        restore_backup(backup, tmp_path / "data", DataOwner("r1id", "r1", "c1"))
    assert not (tmp_path / "data").exists()


def test_a_backup_taken_after_entries_the_state_does_not_apply_restores(
    tmp_path: Path,
) -> None:
    """Found by an audit: a node restarted, and backed up before any write, made a backup at
    its new leader's empty entry (index 5 here), past its state's last write (4): restore
    refused it ("contradicts itself"), so a fresh backup of a quiet cluster was no backup."""
    backup = tmp_path / "c1.qrbackup"
    backup_applied_to_4(backup, 5, 2)
    restore_backup(backup, tmp_path / "data", DataOwner("r1id", "r1", "c1"))
    with LevelDBStorage(tmp_path / "data") as storage:
        state = storage.load()
    assert state.snapshot.meta == SnapshotMeta(5, 2, Membership(frozenset({"r1id"})))
    assert state.hard_state.commit == 5 and state.entries == []
    store = KVStore()
    store.restore(state.snapshot.data)
    assert store.last_applied == 4 and store.get("k4") == (b"v", 4)


def test_a_restore_that_fails_to_write_leaves_the_directory_empty(tmp_path: Path) -> None:
    """Found by an audit: a restore onto a disk that filled up failed ("write failed: … No
    space left on device") but left a store holding only whose it was. Restoring again was
    refused ("not an empty directory"), and a node started on it came up as a new node and
    founded an empty cluster. On a tmpfs too small for the backup (root only)."""
    if why := small_disks.why_not():
        pytest.skip(why)
    store = KVStore()
    store.apply(1, encode_command("set", {"key": "big", "value": os.urandom(256 << 10)}, 1000))
    data = store.snapshot()
    info = BackupInfo("c1", None, 1, 1, frozenset({"n1"}), frozenset(), 0, len(data))
    backup = tmp_path / "c1.qrbackup"
    with backup.open("wb") as fp:
        write_backup(fp, info, [data])
    disk = tmp_path / "disk"
    small_disks.mount(disk, 64 << 10)
    try:
        owner = DataOwner("r1id", "r1", "c1")
        with pytest.raises(StorageError, match="No space left on device"):
            restore_backup(backup, disk / "data", owner)
        assert list((disk / "data").iterdir()) == []
        small_disks.resize(disk, 4 << 20)
        restore_backup(backup, disk / "data", owner)  # a directory left empty is one to use
        with LevelDBStorage(disk / "data") as storage:
            assert storage.load().snapshot.meta.index == 1
    finally:
        small_disks.unmount(disk)


def test_a_backup_that_fails_part_way_gives_its_stream_up(tmp_path: Path) -> None:
    """The client's channel outlives a failed backup, so its stream is aborted rather than
    left holding what the node sends: a share of the connection's flow-control window that
    would never come back, and the node's task sending it. Here the failure is the caller's
    own progress callback; a backup read to its end leaves the stream to end by itself."""
    result = {
        "cluster_id": None, "index": 4, "term": 1, "size": 1000,
        "membership": {"voters": ["n1"], "learners": []},
    }  # fmt: skip
    frames: list[bytes] = []
    aborted: list[bool] = []

    async def read_frame() -> bytes:
        return frames.pop(0)

    async def open_stream() -> SimpleNamespace:
        return SimpleNamespace(
            write_frame=lambda frame: None,
            end=lambda: None,
            read_frame=read_frame,
            abort=lambda: aborted.append(True),
        )

    async def close_if_silent(busy: object) -> None:
        await asyncio.Event().wait()

    channel = SimpleNamespace(
        conn=SimpleNamespace(open_stream=open_stream), close_if_silent=close_if_silent
    )

    class GaveUp(Exception):
        pass

    def progress(done: int, size: int) -> None:
        raise GaveUp

    async def scenario() -> None:
        client = MgmtClient([("127.0.0.1", 9)], None, "c1")  # type: ignore[arg-type]

        async def reach() -> SimpleNamespace:
            return channel

        client._reach = reach  # type: ignore[method-assign, assignment]
        for fails in (True, False):
            sender = BackupSender(result, id=1)
            frames[:] = [sender.header, *sender.chunks(bytes(1000)), sender.trailer()]
            aborted.clear()
            if fails:
                with pytest.raises(GaveUp):
                    await client.backup(tmp_path / "b.qrbackup", progress=progress)
                assert not list(tmp_path.iterdir())  # nothing left behind
            else:
                assert (await client.backup(tmp_path / "b.qrbackup")).size == 1000
            assert aborted == ([True] if fails else [])
        await client.close()

    asyncio.run(scenario())
