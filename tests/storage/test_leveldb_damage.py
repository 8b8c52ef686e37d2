"""Damage to the files LevelDB keeps, byte by byte: a store either loads exactly as it was
written or refuses to open with a StorageError naming its directory; it never loads other
data, and never fails in any other way.

The one exception is LevelDB's write-ahead log: LevelDB takes a record that runs past the end
of the log (the log cut short, or a record's length damaged) for a write that a crash cut
short, and drops it and whatever follows without an error (docs/storage.md, "What is
checked"). Such a store must then load as it was after an earlier write that the table files
or the rest of the log hold whole, never as anything else.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from quicraft.core import Entry, HardState, Membership, Snapshot, SnapshotMeta
from quicraft.storage import LevelDBStorage, StorageError

MEMBERS = Membership(frozenset({"n1", "n2", "n3"}))
META_KEYS = ("owner", "addresses")
#: Files LevelDB never reads data from: its lock and its own text log.
UNREAD = {"LOCK", "LOG", "LOG.old"}

Write = Callable[[LevelDBStorage], None]


def entries(first: int, last: int, term: int) -> list[Entry]:
    return [Entry(term, i, data=f"command {i} ".encode() * 5) for i in range(first, last + 1)]


#: Two sessions of writes. Reopening the store moves the first session's writes into a table
#: file, so the damaged store has tables, a manifest and a write-ahead log to damage.
SESSIONS: list[list[Write]] = [
    [
        lambda s: s.save(
            hard_state=HardState(2, "n1", 5),
            entries=[],
            snapshot=Snapshot(SnapshotMeta(10, 2, MEMBERS), bytes(range(256)) * 4),
        ),
        lambda s: s.save(
            hard_state=HardState(3, "n2", 12), entries=entries(11, 40, 3), snapshot=None
        ),
        lambda s: s.put_meta("owner", b"owner record"),
    ],
    [
        lambda s: s.save(
            hard_state=HardState(4, "n3", 41), entries=entries(41, 60, 4), snapshot=None
        ),
        lambda s: s.put_meta("addresses", b"address book"),
        lambda s: s.save(
            hard_state=HardState(4, "n3", 55), entries=entries(61, 62, 4), snapshot=None
        ),
    ],
]


def write_store(path: Path, count: int | None = None) -> None:
    """The store after the first `count` writes of SESSIONS (all of them by default)."""
    done = 0
    for session in SESSIONS:
        with LevelDBStorage(path, chunk_size=64) as store:
            for write in session:
                if count is not None and done == count:
                    return
                write(store)
                done += 1


def contents(path: Path) -> tuple[object, ...]:
    """Everything a node reads back from its store."""
    with LevelDBStorage(path) as store:
        return (store.load(), *(store.get_meta(key) for key in META_KEYS))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("written") / "store"
    write_store(path)
    return path


@pytest.fixture(scope="module")
def every_state(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[object, ...]]:
    """What the store holds after each write, from the first to the last."""
    total = sum(len(session) for session in SESSIONS)
    states = []
    for count in range(1, total + 1):
        path = tmp_path_factory.mktemp("prefix") / "store"
        write_store(path, count)
        states.append(contents(path))
    return states


def outcome(
    written: Path, work: Path, name: str, change: Callable[[bytearray], bytearray]
) -> object:
    """Open a copy of `written` whose file `name` went through `change`: its contents, or
    the StorageError it is refused with."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(written, work)
    target = work / name
    target.write_bytes(bytes(change(bytearray(target.read_bytes()))))
    try:
        return contents(work)
    except StorageError as e:
        message = str(e)
        assert message.startswith(f"{work}: ") and "\n" not in message, message
        return e


def acceptable(name: str, every_state: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """What a store may load as once its file `name` is damaged: as it was written, or, for
    the write-ahead log, as it was after any of the writes it holds."""
    if name.endswith(".log"):
        return every_state[len(SESSIONS[0]) - 1 :]  # the first session is in the tables
    return every_state[-1:]


def read_files(written: Path) -> list[str]:
    names = sorted(p.name for p in written.iterdir() if p.name not in UNREAD)
    kinds = {n.rsplit(".", 1)[-1] if "." in n else n.split("-")[0] for n in names}
    assert kinds == {"CURRENT", "MANIFEST", "ldb", "log"}, names  # what the test means to damage
    return names


def test_every_byte_changed_loads_the_same_data_or_is_refused(
    written: Path, every_state: list[tuple[object, ...]], tmp_path: Path
) -> None:
    rng = random.Random(20261204)
    refused = 0
    for name in read_files(written):
        for at in range((written / name).stat().st_size):
            mask = rng.randrange(1, 256)

            def flip(raw: bytearray, at: int = at, mask: int = mask) -> bytearray:
                raw[at] ^= mask
                return raw

            result = outcome(written, tmp_path / "work", name, flip)
            if isinstance(result, StorageError):
                refused += 1
            else:
                assert result in acceptable(name, every_state), (
                    f"{name}: byte {at} ^ {mask:#04x} loaded other data"
                )
    assert refused > 0


def test_a_file_cut_short_is_refused_or_loses_only_whole_writes_at_the_end_of_the_log(
    written: Path, every_state: list[tuple[object, ...]], tmp_path: Path
) -> None:
    dropped = 0
    for name in read_files(written):
        for size in range((written / name).stat().st_size):

            def cut(raw: bytearray, size: int = size) -> bytearray:
                return raw[:size]

            result = outcome(written, tmp_path / "work", name, cut)
            if isinstance(result, StorageError):
                continue
            assert result in acceptable(name, every_state), f"{name} cut to {size} bytes"
            dropped += result != every_state[-1]
    assert dropped > 0  # the log was cut inside its records, and writes went with it
