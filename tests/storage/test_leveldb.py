"""What only the LevelDB backend has: checksums caught at load, the directory lock, refusing
directories that are not a quicraft store, the format version, and surviving a dead process.

Damage is done the way a disk or a stray tool would: with plyvel, on the closed store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import plyvel  # type: ignore[import-untyped]
import pytest

from quicraft.core import Entry, HardState, Membership, Snapshot, SnapshotMeta
from quicraft.storage import (
    FORMAT_VERSION,
    CorruptionError,
    LevelDBStorage,
    LockedError,
    StorageError,
    check_hard_state,
)
from quicraft.storage import records as rec

MEMBERS = Membership(frozenset({"n1"}))


def log(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, data=f"command {i}".encode()) for i in range(first, last + 1)]


def make_store(path: Path) -> None:
    """A store with a hard state, a three-chunk snapshot at 10 and entries 11..15."""
    with LevelDBStorage(path, chunk_size=4) as store:
        snap = Snapshot(SnapshotMeta(10, 2, MEMBERS), b"0123456789")
        store.save(hard_state=HardState(3, "n1", 12), entries=log(11, 15, 3), snapshot=snap)


def tamper(path: Path, change: Callable[[plyvel.DB], object]) -> None:
    db = plyvel.DB(str(path))
    try:
        change(db)
    finally:
        db.close()


def flip_last_byte(key: bytes) -> Callable[[plyvel.DB], None]:
    def change(db: plyvel.DB) -> None:
        value = db.get(key)
        db.put(key, value[:-1] + bytes([value[-1] ^ 0x01]))

    return change


def load_error(path: Path) -> str:
    """The message a node would stop with when starting on `path`."""
    with pytest.raises(CorruptionError) as caught, LevelDBStorage(path) as store:
        store.load()
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message


def test_an_intact_store_loads(tmp_path: Path) -> None:
    make_store(tmp_path)
    with LevelDBStorage(tmp_path) as store:
        state = store.load()
    assert state.snapshot.data == b"0123456789"
    assert [e.index for e in state.entries] == [11, 12, 13, 14, 15]


def test_a_directory_whose_name_is_not_utf8_holds_a_store(tmp_path: Path) -> None:
    """A name of bytes the file system took (Latin-1 "café", say): Python holds it with
    surrogates, which plyvel refused for a str (the node stopped with a traceback)."""
    path = tmp_path / os.fsdecode(b"caf\xe9")
    make_store(path)
    with LevelDBStorage(path) as store:
        assert store.load().hard_state == HardState(3, "n1", 12)
    assert os.listdir(tmp_path) == [os.fsdecode(b"caf\xe9")]


@pytest.mark.parametrize(
    ("key", "record"),
    [
        (rec.entry_key(13), "log entry 13"),
        (rec.HARD_STATE_KEY, "hard state"),
        (rec.chunk_key(10, 1), "snapshot chunk 1 (snapshot at 10)"),
        (rec.SNAPSHOT_KEY, "snapshot metadata"),
    ],
)
def test_a_damaged_record_is_named_at_load(tmp_path: Path, key: bytes, record: str) -> None:
    make_store(tmp_path)
    tamper(tmp_path, flip_last_byte(key))
    assert load_error(tmp_path) == f"{tmp_path}: {record}: checksum mismatch"


def test_a_record_moved_to_another_key_fails_its_checksum(tmp_path: Path) -> None:
    """Entries 12 and 13 have the same length and term: only the key tells them apart."""
    make_store(tmp_path)
    tamper(tmp_path, lambda db: db.put(rec.entry_key(13), db.get(rec.entry_key(12))))
    assert load_error(tmp_path) == f"{tmp_path}: log entry 13: checksum mismatch"


def test_a_truncated_record_is_named(tmp_path: Path) -> None:
    make_store(tmp_path)
    tamper(tmp_path, lambda db: db.put(rec.entry_key(14), b"\x00\x01"))
    assert load_error(tmp_path) == f"{tmp_path}: log entry 14: truncated record"


def test_a_gap_in_the_log_is_found(tmp_path: Path) -> None:
    make_store(tmp_path)
    tamper(tmp_path, lambda db: db.delete(rec.entry_key(13)))
    assert "log entry 13: missing (the log jumps from 12 to 14)" in load_error(tmp_path)


def test_a_log_that_does_not_follow_the_snapshot_is_found(tmp_path: Path) -> None:
    make_store(tmp_path)
    tamper(tmp_path, lambda db: db.delete(rec.entry_key(11)))
    message = load_error(tmp_path)
    assert "log entry 12: the log must start at 11, right after the snapshot at 10" in message


def test_a_lost_tail_of_the_log_behind_the_commit_index_is_found(tmp_path: Path) -> None:
    """Commit index 12 is stored with the entries up to it: without 12 the tail is lost. A
    node opening the store refuses it (it used to stop with a traceback from the core)."""
    make_store(tmp_path)
    tamper(tmp_path, lambda db: [db.delete(rec.entry_key(i)) for i in (12, 13, 14, 15)])
    with LevelDBStorage(tmp_path) as store:
        state = store.load()  # every record is sound: the rule broken is Raft's
    with pytest.raises(CorruptionError) as refused:
        check_hard_state(state, tmp_path)
    assert str(refused.value) == (
        f"{tmp_path}: hard state: commit index 12 is beyond the stored log, which ends at 11 "
        "(the log's tail is missing)"
    )
    whole = tmp_path / "whole"
    make_store(whole)
    with LevelDBStorage(whole) as store:
        check_hard_state(store.load(), whole)  # an undamaged store passes


@pytest.mark.parametrize(
    ("change", "term", "holder"),
    [
        (lambda db: db.delete(rec.HARD_STATE_KEY), 0, "log entry 15"),
        (  # an older hard state, whole: its record checksum is sound
            lambda db: db.put(rec.HARD_STATE_KEY, rec.encode_hard_state(HardState(2, "n1", 10))),
            2,
            "log entry 15",
        ),
        (  # no entries after the snapshot: its term is the one to compare with
            lambda db: [
                db.delete(key) for key in [*db.iterator(prefix=b"E", include_value=False), b"H"]
            ],
            0,
            "the snapshot at 10",
        ),
    ],
    ids=["missing", "older", "missing-and-no-entries"],
)
def test_a_hard_state_lost_or_older_than_the_log_is_found(
    tmp_path: Path, change: Callable[[plyvel.DB], object], term: int, holder: str
) -> None:
    """A term is stored before or with the entries of that term, so a log with a term above
    the hard state's lost its hard state, and with it the vote. It used to start at term 0 with
    no vote: it could vote again in a term it had voted in."""
    make_store(tmp_path)
    tamper(tmp_path, change)
    with LevelDBStorage(tmp_path) as store:
        state = store.load()
    with pytest.raises(CorruptionError) as refused:
        check_hard_state(state, tmp_path)
    highest = 3 if holder.startswith("log") else 2
    assert str(refused.value) == (
        f"{tmp_path}: hard state: term {term} is below the term {highest} of {holder} "
        "(the hard state is missing or older than the log: a vote may be forgotten)"
    )


def test_a_missing_snapshot_chunk_is_found(tmp_path: Path) -> None:
    make_store(tmp_path)
    tamper(tmp_path, lambda db: db.delete(rec.chunk_key(10, 2)))
    assert load_error(tmp_path) == f"{tmp_path}: snapshot chunk 2 of 3: missing"


def test_chunks_swapped_between_keys_fail(tmp_path: Path) -> None:
    make_store(tmp_path)

    def swap(db: plyvel.DB) -> None:
        a, b = db.get(rec.chunk_key(10, 0)), db.get(rec.chunk_key(10, 1))
        db.put(rec.chunk_key(10, 0), b)
        db.put(rec.chunk_key(10, 1), a)

    tamper(tmp_path, swap)
    assert "snapshot chunk 0 (snapshot at 10): checksum mismatch" in load_error(tmp_path)


def stored_keys(path: Path, prefix: bytes) -> list[bytes]:
    db = plyvel.DB(str(path))
    try:
        return list(db.iterator(prefix=prefix, include_value=False))
    finally:
        db.close()


def test_a_new_snapshot_deletes_every_old_chunk_and_then_the_entries_it_covers(
    tmp_path: Path,
) -> None:
    make_store(tmp_path)
    with LevelDBStorage(tmp_path, chunk_size=4) as store:
        store.compact(Snapshot(SnapshotMeta(12, 3, MEMBERS), b"abcde"))
    assert stored_keys(tmp_path, rec.CHUNK_PREFIX) == [rec.chunk_key(12, 0), rec.chunk_key(12, 1)]
    # The covered entries wait for the next save (it is on the log's path, compact() too),
    # and load() skips them meanwhile, across a reopen as well.
    assert stored_keys(tmp_path, rec.ENTRY_PREFIX) == [rec.entry_key(i) for i in range(11, 16)]
    with LevelDBStorage(tmp_path) as store:
        assert [e.index for e in store.load().entries] == [13, 14, 15]
        store.save(hard_state=HardState(3, "n1", 13), entries=[], snapshot=None)
    assert stored_keys(tmp_path, rec.ENTRY_PREFIX) == [rec.entry_key(i) for i in (13, 14, 15)]


def test_covered_entries_go_a_slice_per_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("quicraft.storage.leveldb.TRIM_PER_SAVE", 2)
    with LevelDBStorage(tmp_path) as store:
        store.save(hard_state=None, entries=log(1, 8), snapshot=None)
        store.compact(Snapshot(SnapshotMeta(5, 1, MEMBERS), b"state"))
        store.save(hard_state=None, entries=log(9, 9), snapshot=None)
    assert stored_keys(tmp_path, rec.ENTRY_PREFIX) == [rec.entry_key(i) for i in range(3, 10)]
    with LevelDBStorage(tmp_path) as store:  # a reopened store knows what is left
        for _ in range(2):
            store.save(hard_state=HardState(1), entries=[], snapshot=None)
        assert [e.index for e in store.load().entries] == [6, 7, 8, 9]
    assert stored_keys(tmp_path, rec.ENTRY_PREFIX) == [rec.entry_key(i) for i in range(6, 10)]


def test_compact_writes_only_the_record_of_a_staged_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_store(tmp_path)
    with LevelDBStorage(tmp_path, chunk_size=4) as store:
        store.stage(12, b"abcdefghij")
        assert store.load().snapshot.meta.index == 10  # staged chunks are invisible
        written_whole: list[Snapshot] = []
        monkeypatch.setattr(rec, "encode_snapshot", lambda s, size: written_whole.append(s))
        summed: list[bytes] = []  # the data's CRC too was computed by stage(), off the log's path
        monkeypatch.setattr(rec, "data_crc", lambda data: summed.append(data))
        store.compact(Snapshot(SnapshotMeta(12, 3, MEMBERS), b"abcdefghij"))
        assert written_whole == [] and summed == []
        monkeypatch.undo()
    with LevelDBStorage(tmp_path, chunk_size=4) as store:
        assert store.load().snapshot == Snapshot(SnapshotMeta(12, 3, MEMBERS), b"abcdefghij")
    assert stored_keys(tmp_path, rec.CHUNK_PREFIX) == [rec.chunk_key(12, n) for n in range(3)]


def test_chunks_staged_by_a_compaction_that_never_finished_are_ignored_then_dropped(
    tmp_path: Path,
) -> None:
    make_store(tmp_path)
    with LevelDBStorage(tmp_path, chunk_size=4) as store:
        store.stage(14, b"staged, then the node died")
    with LevelDBStorage(tmp_path, chunk_size=4) as store:
        state = store.load()
        assert state.snapshot == Snapshot(SnapshotMeta(10, 2, MEMBERS), b"0123456789")
        assert [e.index for e in state.entries] == [11, 12, 13, 14, 15]
        store.compact(Snapshot(SnapshotMeta(12, 3, MEMBERS), b"abc"))
    assert stored_keys(tmp_path, rec.CHUNK_PREFIX) == [rec.chunk_key(12, 0)]


def test_staged_chunks_deleted_by_an_installed_snapshot_are_not_relied_on(
    tmp_path: Path,
) -> None:
    make_store(tmp_path)
    store = LevelDBStorage(tmp_path, chunk_size=4)
    store.stage(12, b"abcdefghij")
    store.save(hard_state=None, entries=[], snapshot=Snapshot(SnapshotMeta(11, 3, MEMBERS)))
    store.compact(Snapshot(SnapshotMeta(12, 3, MEMBERS), b"abcdefghij"))
    store.close()
    with LevelDBStorage(tmp_path, chunk_size=4) as store:
        assert store.load().snapshot == Snapshot(SnapshotMeta(12, 3, MEMBERS), b"abcdefghij")


def test_nothing_is_staged_at_or_below_the_stored_snapshot(tmp_path: Path) -> None:
    make_store(tmp_path)
    with LevelDBStorage(tmp_path, chunk_size=4) as store:
        store.stage(10, b"abcdefghij")
        store.stage(9, b"abcdefghij")
    assert stored_keys(tmp_path, rec.CHUNK_PREFIX) == [rec.chunk_key(10, n) for n in range(3)]


class _ScansWatched:
    """A plyvel.DB that records the bounds of every iterator made on it."""

    def __init__(self, db: plyvel.DB) -> None:
        self.db, self.scans = db, list[dict[str, object]]()

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)

    def iterator(self, **bounds: object) -> object:
        self.scans.append(bounds)
        return self.db.iterator(**bounds)


def test_old_chunks_are_deleted_without_a_scan(tmp_path: Path) -> None:
    """A scan of the chunk keys reads their blocks, values and all: with 330 MB of chunks it
    held the log's writes for a second, and the followers started an election."""
    make_store(tmp_path)
    with LevelDBStorage(tmp_path, chunk_size=4) as store:
        store.stage(16, b"staged, then the node died")  # unfinished: found when opened
    with LevelDBStorage(tmp_path, chunk_size=4) as store:
        watched = _ScansWatched(store._db)
        store._db = watched
        store.stage(12, b"abcdefghij")
        store.compact(Snapshot(SnapshotMeta(12, 3, MEMBERS), b"abcdefghij"))
        store.compact(Snapshot(SnapshotMeta(13, 3, MEMBERS), b"not staged"))
        installed = Snapshot(SnapshotMeta(20, 4, MEMBERS), b"installed")
        store.save(hard_state=None, entries=[], snapshot=installed)
        store._db = watched.db
        # Only the log's entries are scanned (an installed snapshot replaces them).
        assert [scan["prefix"] for scan in watched.scans] == [rec.ENTRY_PREFIX]
    assert stored_keys(tmp_path, rec.CHUNK_PREFIX) == [rec.chunk_key(20, n) for n in range(3)]
    with LevelDBStorage(tmp_path, chunk_size=4) as store:
        assert store.load().snapshot == installed


def test_a_second_opener_in_this_process_is_locked_out(tmp_path: Path) -> None:
    first = LevelDBStorage(tmp_path)
    with pytest.raises(LockedError, match=f"data directory {tmp_path} is already open"):
        LevelDBStorage(tmp_path)
    first.close()
    LevelDBStorage(tmp_path).close()  # free again once closed


OPEN_IN_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from quicraft.storage import LevelDBStorage, LockedError
    try:
        LevelDBStorage(Path(sys.argv[1]))
    except LockedError as e:
        print("LockedError:", e)
    else:
        print("opened")
    """
)


def test_a_second_opener_in_another_process_is_locked_out(tmp_path: Path) -> None:
    with LevelDBStorage(tmp_path):
        child = subprocess.run(
            [sys.executable, "-c", OPEN_IN_CHILD, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    expected = f"LockedError: data directory {tmp_path} is in use by another process"
    assert child.stdout.strip() == expected


def test_a_save_survives_a_process_that_dies_without_closing(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        from quicraft.core import Entry, HardState
        from quicraft.storage import LevelDBStorage
        store = LevelDBStorage(Path(sys.argv[1]))
        store.save(hard_state=HardState(5, "n2", 1), entries=[Entry(5, 1)], snapshot=None)
        os._exit(0)  # no close, no flush: only what save() synced is there
        """
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60)
    with LevelDBStorage(tmp_path) as store:
        state = store.load()
    assert state.hard_state == HardState(5, "n2", 1)
    assert state.entries == [Entry(5, 1)]


def test_a_directory_of_other_files_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StorageError, match="not a quicraft data directory") as caught:
        LevelDBStorage(tmp_path)
    assert type(caught.value) is StorageError
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_database_without_its_current_file_is_named_so_and_left_alone(tmp_path: Path) -> None:
    """LevelDB writes CURRENT last when it makes a database: a first start killed before that
    leaves LOCK, LOG and a MANIFEST (found by a review)."""
    LevelDBStorage(tmp_path).close()
    (tmp_path / "CURRENT").unlink()
    left = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StorageError, match="a LevelDB database without its CURRENT file"):
        LevelDBStorage(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == left


def write_ahead_logs(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.suffix == ".log"]


@pytest.mark.parametrize("reopened", [False, True])
def test_a_store_whose_write_ahead_log_is_gone_is_refused_and_left_alone(
    tmp_path: Path, reopened: bool
) -> None:
    """Found by an audit: LevelDB opens a database whose log file was deleted as if the
    writes it held had never been made, without a word. The store then read as new (the
    node founded a new cluster) or, with reopened (its older writes in a table file), as it
    was one session ago: votes and acknowledged entries forgotten."""
    with LevelDBStorage(tmp_path) as store:
        store.save(hard_state=HardState(2, "n1", 0), entries=log(1, 3), snapshot=None)
    if reopened:
        with LevelDBStorage(tmp_path) as store:  # opening moves the first writes to a table
            store.save(hard_state=HardState(3, "n1", 3), entries=log(4, 5, 3), snapshot=None)
    for path in write_ahead_logs(tmp_path):
        path.unlink()
    left = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StorageError) as caught:
        LevelDBStorage(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}: LevelDB's write-ahead log (NNNNNN.log) is missing, and with it the "
        "latest writes; restore the directory from a backup (if this node never stored "
        "anything, remove it)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == left


def test_a_leveldb_database_with_nothing_in_it_is_refused(tmp_path: Path) -> None:
    """Found by an audit: an empty database was taken for a new store. A store is stamped
    with its format version when it is made, so an empty one is a start cut short right
    then, another program's, or a store whose log was cut to nothing: read as new, it made
    the node found a new cluster in place of its own."""
    plyvel.DB(str(tmp_path), create_if_missing=True).close()
    with pytest.raises(StorageError, match="an empty LevelDB database, not a quicraft store"):
        LevelDBStorage(tmp_path)
    shutil.rmtree(tmp_path)
    with LevelDBStorage(tmp_path) as store:
        store.save(hard_state=HardState(2, "n1", 0), entries=log(1, 3), snapshot=None)
    (only,) = write_ahead_logs(tmp_path)
    only.write_bytes(b"")
    with pytest.raises(StorageError) as caught:
        LevelDBStorage(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}: an empty LevelDB database, not a quicraft store (a first start cut "
        "short, another program's, or a store whose files were lost); restore the directory "
        "from a backup (if this node never stored anything, remove it)"
    )


def test_a_store_that_could_not_be_made_leaves_nothing_behind(tmp_path: Path) -> None:
    """Found by an audit: a node started on a full disk left LevelDB's first files (LOCK,
    LOG, a MANIFEST) in its new data directory, and once given space it was refused for
    good ("a LevelDB database without its CURRENT file"). On a tmpfs of one page, then two,
    and so on: each failed start leaves the directory empty, and the first with room makes
    the store."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("a tmpfs of its own needs root on Linux (CI runs the tests as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4096", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    data = disk / "data"
    refused = 0
    try:
        for pages in range(1, 20):
            size = f"remount,size={pages * 4096}"
            subprocess.run(["mount", "-o", size, str(disk)], check=True, timeout=30)
            try:
                LevelDBStorage(data).close()
                break
            except StorageError as e:
                assert str(e).startswith(f"{data}: cannot open: IO error: "), e
                assert "No space left on device" in str(e)
                assert list(data.iterdir()) == []
                refused += 1
        subprocess.run(["mount", "-o", "remount,size=1m", str(disk)], check=True, timeout=30)
        with LevelDBStorage(data) as store:  # made, and stamped: a new store
            state = store.load()
        assert (state.hard_state, state.snapshot, state.entries) == (HardState(), Snapshot(), [])
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)
    assert refused >= 2  # LevelDB failed at more than one point


def test_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="not a directory"):
        LevelDBStorage(tmp_path / "file")


def test_a_directory_that_cannot_be_made_is_named_with_the_reason(tmp_path: Path) -> None:
    """Found by a review: it said "cannot open: 2"."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match=r"file/data: cannot create the directory: Not a dir"):
        LevelDBStorage(tmp_path / "file" / "data")


def test_a_symlink_to_nothing_is_named_as_such(tmp_path: Path) -> None:
    """Found by an audit: it said "cannot create the directory: File exists"."""
    (tmp_path / "data").symlink_to(tmp_path / "gone")
    with pytest.raises(
        StorageError, match=r"data: cannot create the directory: it is a symlink to "
    ):
        LevelDBStorage(tmp_path / "data")


def test_a_symlink_that_loops_is_named_as_such(tmp_path: Path) -> None:
    """Found by an audit: it said the link's target "does not exist", and it does."""
    (tmp_path / "data").symlink_to("other")
    (tmp_path / "other").symlink_to("data")
    with pytest.raises(StorageError) as caught:
        LevelDBStorage(tmp_path / "data")
    assert str(caught.value) == (
        f"{tmp_path / 'data'}: cannot create the directory: it is a symlink to other, "
        "the symlinks from there lead round in a loop"
    )


def test_a_directory_this_user_may_not_enter_is_named_with_the_reason(tmp_path: Path) -> None:
    """Found by an audit: it said "[Errno 13] Permission denied: '…'"."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    data = locked / "data"
    opening = (
        "from pathlib import Path\n"
        "from quicraft.storage import LevelDBStorage, StorageError\n"
        f"try:\n    LevelDBStorage(Path({str(data)!r}))\n"
        "except StorageError as e:\n    print(e)\n"
    )
    as_is: list[str] = []
    if os.geteuid() == 0:  # root may enter anything: open it without that power
        if shutil.which("setpriv") is None:
            pytest.skip("as root, this needs setpriv (util-linux) to give up CAP_DAC_*")
        as_is = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    done = subprocess.run(
        [*as_is, sys.executable, "-c", opening], capture_output=True, text=True, timeout=60
    )
    assert done.stdout == f"{data}: cannot open: Permission denied\n", done.stderr


def test_another_programs_leveldb_is_refused(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path), create_if_missing=True)
    db.put(b"user:1", b"alice")
    db.close()
    with pytest.raises(StorageError, match="foreign LevelDB database"):
        LevelDBStorage(tmp_path)


@pytest.mark.parametrize(
    "kept", [rec.HARD_STATE_KEY, rec.SNAPSHOT_KEY, rec.entry_key(11), rec.meta_key(b"owner")]
)
def test_a_store_that_lost_its_version_record_is_named_as_damaged_not_foreign(
    tmp_path: Path, kept: bytes
) -> None:
    """Found by an audit: it was "not a quicraft data directory (a foreign LevelDB
    database)", which sends the operator looking for the right directory. (A node started
    with --no-bootstrap and never added holds only metadata.)"""
    make_store(tmp_path)
    with LevelDBStorage(tmp_path) as store:
        store.put_meta("owner", b"someone")
    keys = stored_keys(tmp_path, b"")
    tamper(tmp_path, lambda db: [db.delete(key) for key in keys if key != kept])
    with pytest.raises(CorruptionError) as caught:
        LevelDBStorage(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}: format version: missing, but the database holds quicraft records; "
        "restore the directory from a backup (if this node never stored anything, remove it)"
    )
    assert stored_keys(tmp_path, b"") == [kept]  # nothing written


def test_a_foreign_record_under_one_of_our_keys_is_still_foreign(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path), create_if_missing=True)
    db.put(rec.HARD_STATE_KEY, b"another program's value")
    db.close()
    with pytest.raises(StorageError, match="foreign LevelDB database") as caught:
        LevelDBStorage(tmp_path)
    assert not isinstance(caught.value, CorruptionError)


def test_missing_parent_directories_are_made(tmp_path: Path) -> None:
    with LevelDBStorage(tmp_path / "a" / "b") as store:
        store.put_meta("k", b"v")
    assert (tmp_path / "a" / "b" / "CURRENT").exists()


def test_a_new_data_directory_is_its_owners_alone(tmp_path: Path) -> None:
    """Found by an audit: it was made 0755 (the umask's choice) and LevelDB's files 0644, so
    every local user could read every value of the store, which a backup file (0600) keeps
    from them."""
    old = os.umask(0o022)
    try:
        LevelDBStorage(tmp_path / "a" / "data").close()
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "data").stat().st_mode & 0o777 == 0o700


def test_an_unknown_format_version_is_refused(tmp_path: Path) -> None:
    LevelDBStorage(tmp_path).close()
    newer = rec.MAGIC + (FORMAT_VERSION + 1).to_bytes(4, "big")
    tamper(tmp_path, lambda db: db.put(rec.VERSION_KEY, rec.seal(rec.VERSION_KEY, newer)))
    with pytest.raises(StorageError, match=f"format version {FORMAT_VERSION + 1} is not supp"):
        LevelDBStorage(tmp_path)
    plyvel.DB(str(tmp_path)).close()  # the refused store was closed: its lock is free


def test_a_damaged_version_record_is_corruption(tmp_path: Path) -> None:
    LevelDBStorage(tmp_path).close()
    tamper(tmp_path, flip_last_byte(rec.VERSION_KEY))
    with pytest.raises(CorruptionError, match="format version: checksum mismatch"):
        LevelDBStorage(tmp_path)


def test_a_version_record_with_its_magic_damaged_is_corruption_not_foreign(
    tmp_path: Path,
) -> None:
    """Found by a review: it read as "a foreign LevelDB database"."""
    LevelDBStorage(tmp_path).close()

    def damage_magic(db: plyvel.DB) -> None:
        value = bytearray(db.get(rec.VERSION_KEY))
        value[6] ^= 0x01  # inside the magic, after the 4-byte checksum
        db.put(rec.VERSION_KEY, bytes(value))

    tamper(tmp_path, damage_magic)
    with pytest.raises(CorruptionError, match="format version: checksum mismatch"):
        LevelDBStorage(tmp_path)


def test_damaged_metadata_is_named(tmp_path: Path) -> None:
    with LevelDBStorage(tmp_path) as store:
        store.put_meta("cluster-id", b"c-42")
    tamper(tmp_path, flip_last_byte(rec.meta_key(b"cluster-id")))
    with LevelDBStorage(tmp_path) as store, pytest.raises(CorruptionError) as caught:
        store.get_meta("cluster-id")
    assert str(caught.value) == f"{tmp_path}: metadata 'cluster-id': checksum mismatch"


def test_a_snapshot_index_no_log_can_reach_is_corruption(tmp_path: Path) -> None:
    """The last u64: chunks of a newer snapshot could not be keyed (it stopped the node on a
    struct.error)."""
    with LevelDBStorage(tmp_path) as store:
        last = (1 << 64) - 1
        store.save(
            hard_state=None, entries=[], snapshot=Snapshot(SnapshotMeta(last, 1, MEMBERS), b"x")
        )
    assert load_error(tmp_path) == f"{tmp_path}: snapshot metadata: index {last} is out of range"
