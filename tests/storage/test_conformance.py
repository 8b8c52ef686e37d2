"""The Storage contract, checked on every backend by the same tests.

The model is the simulator's `Durable`, the reference semantics of writing a Ready: the
property test drives a backend and a Durable with the same random saves and compactions, and
after every reopen what the backend loads must be exactly what the Durable holds.
"""

from __future__ import annotations

import ast
import os
import tempfile
from collections.abc import Callable, Iterator
from importlib.util import resolve_name
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quicraft.core import (
    Entry,
    EntryType,
    HardState,
    Membership,
    PersistentState,
    Ready,
    Snapshot,
    SnapshotMeta,
)
from quicraft.sim.node import Durable
from quicraft.storage import (
    CHUNK_SIZE,
    LevelDBStorage,
    MemoryStorage,
    Storage,
    StorageError,
)

KINDS = ["memory", "leveldb"]


class Backend:
    """Opens and reopens one store of a kind; a memory store "reopens" as itself."""

    def __init__(self, kind: str, path: Path, chunk_size: int = CHUNK_SIZE):
        self.kind, self.path, self.chunk_size = kind, path, chunk_size

    def open(self) -> Storage:
        if self.kind == "memory":
            return MemoryStorage()
        return LevelDBStorage(self.path, chunk_size=self.chunk_size)

    def reopen(self, storage: Storage) -> Storage:
        if self.kind == "memory":
            return storage
        storage.close()
        return self.open()


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path / "data")


@pytest.fixture
def store(backend: Backend) -> Iterator[Storage]:
    storage = backend.open()
    yield storage
    storage.close()


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [
        Entry(term, i, EntryType.NORMAL, f"cmd {i} @{term}".encode())
        for i in range(first, last + 1)
    ]


def snapshot(index: int, term: int = 1, data: bytes = b"image") -> Snapshot:
    members = Membership(frozenset({"n1", "n2"}), frozenset({"n3"}))
    return Snapshot(SnapshotMeta(index, term, members), data)


def test_a_new_store_loads_empty(store: Storage) -> None:
    assert store.load() == PersistentState()


def test_save_then_load_round_trips_every_field(backend: Backend) -> None:
    store = backend.open()
    log = [
        Entry(2, 4, EntryType.NOOP, b""),
        Entry(2, 5, EntryType.CONF_CHANGE, b'{"kind": "promote", "node": "n3"}'),
        Entry(3, 6, EntryType.NORMAL, bytes(range(256))),
    ]
    hard = HardState(term=3, vote="nödé-1", commit=5)
    store.save(hard_state=hard, entries=log, snapshot=snapshot(3, 2, b"\x00state\xff"))
    expected = PersistentState(hard, snapshot(3, 2, b"\x00state\xff"), log)
    assert store.load() == expected
    store = backend.reopen(store)
    assert store.load() == expected
    store.close()


def test_entries_overwrite_the_stored_suffix(store: Storage) -> None:
    store.save(hard_state=None, entries=entries(1, 5), snapshot=None)
    store.save(hard_state=None, entries=entries(3, 4, term=2), snapshot=None)
    assert store.load().entries == entries(1, 2) + entries(3, 4, term=2)
    store.save(hard_state=None, entries=entries(5, 6, term=2), snapshot=None)  # plain append
    assert store.load().entries == entries(1, 2) + entries(3, 6, term=2)
    store.save(hard_state=None, entries=entries(1, 1, term=3), snapshot=None)  # from the start
    assert store.load().entries == entries(1, 1, term=3)


def test_hard_state_alone_leaves_the_log_alone(store: Storage) -> None:
    store.save(hard_state=HardState(1, "n1", 0), entries=entries(1, 3), snapshot=None)
    store.save(hard_state=HardState(2, None, 3), entries=[], snapshot=None)
    state = store.load()
    assert state.hard_state == HardState(2, None, 3)
    assert state.entries == entries(1, 3)
    store.save(hard_state=None, entries=entries(4, 4), snapshot=None)  # None keeps the old one
    assert store.load().hard_state == HardState(2, None, 3)


def test_an_installed_snapshot_replaces_the_whole_log(store: Storage) -> None:
    store.save(hard_state=None, entries=entries(1, 10), snapshot=None)
    # Entries after the snapshot are dropped too: the core's log restarts from it.
    store.save(hard_state=HardState(4, None, 5), entries=entries(6, 7, 4), snapshot=snapshot(5))
    state = store.load()
    assert state.snapshot == snapshot(5)
    assert state.entries == entries(6, 7, 4)
    store.save(hard_state=None, entries=[], snapshot=snapshot(20, 5, b"newer"))
    assert store.load() == PersistentState(HardState(4, None, 5), snapshot(20, 5, b"newer"), [])
    store.save(hard_state=None, entries=entries(21, 21, 5), snapshot=None)
    assert store.load().entries == entries(21, 21, 5)


def test_compact_drops_only_the_covered_entries(store: Storage) -> None:
    store.save(hard_state=HardState(1, "n1", 10), entries=entries(1, 10), snapshot=None)
    store.compact(snapshot(4))
    assert store.load() == PersistentState(HardState(1, "n1", 10), snapshot(4), entries(5, 10))
    store.compact(snapshot(10, data=b"all"))
    assert store.load().entries == []
    store.save(hard_state=None, entries=entries(11, 12), snapshot=None)
    assert store.load().entries == entries(11, 12)
    store.compact(snapshot(14))  # beyond the last entry: nothing of the log is left
    assert store.load().entries == []
    assert store.load().snapshot == snapshot(14)


def test_calls_that_would_break_the_log_are_refused_and_write_nothing(store: Storage) -> None:
    store.save(hard_state=HardState(1, None, 0), entries=entries(1, 5), snapshot=None)
    store.compact(snapshot(2))
    before = store.load()
    bad = [
        entries(7, 8),  # a gap after the last entry
        entries(2, 3),  # covered by the snapshot
        [*entries(3, 4), *entries(6, 6)],  # not contiguous
    ]
    for log in bad:
        with pytest.raises(ValueError):
            store.save(hard_state=HardState(9, "x", 0), entries=log, snapshot=None)
    with pytest.raises(ValueError, match="after the snapshot at 8"):
        store.save(hard_state=None, entries=entries(8, 8), snapshot=snapshot(8))
    with pytest.raises(ValueError, match="cannot compact"):
        store.compact(snapshot(1))
    assert store.load() == before


def test_metadata_is_kept_apart_from_the_log(backend: Backend) -> None:
    store = backend.open()
    assert store.get_meta("cluster-id") is None
    store.put_meta("cluster-id", b"abc")
    store.put_meta("adresse/n1", b"\x00\x01")
    store.put_meta("cluster-id", b"def")
    store.save(hard_state=None, entries=entries(1, 2), snapshot=snapshot(0))
    store = backend.reopen(store)
    assert store.get_meta("cluster-id") == b"def"
    assert store.get_meta("adresse/n1") == b"\x00\x01"
    assert store.load().entries == entries(1, 2)
    with pytest.raises(ValueError):
        store.put_meta("", b"x")
    with pytest.raises(TypeError):
        store.put_meta("k", "not bytes")  # type: ignore[arg-type]
    store.close()


def test_a_closed_store_refuses_every_call(backend: Backend) -> None:
    store = backend.open()
    store.close()
    store.close()  # twice is harmless
    calls: list[Callable[[], object]] = [
        store.load,
        lambda: store.save(hard_state=HardState(1), entries=[], snapshot=None),
        lambda: store.stage(1, b"data"),
        lambda: store.compact(snapshot(1)),
        lambda: store.get_meta("k"),
        lambda: store.put_meta("k", b"v"),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="closed"):
            call()


def test_everything_survives_a_reopen(backend: Backend) -> None:
    store = backend.open()
    store.save(hard_state=HardState(7, "n2", 12), entries=entries(1, 12, 7), snapshot=None)
    store.compact(snapshot(6, 7))
    store.save(hard_state=None, entries=entries(10, 14, 8), snapshot=None)
    expected = store.load()
    store = backend.reopen(store)
    assert store.load() == expected
    # The reopened store knows where its log ends: a suffix cut after a reopen is exact.
    store.save(hard_state=None, entries=entries(12, 12, 9), snapshot=None)
    assert store.load().entries == entries(7, 9, 7) + entries(10, 11, 8) + entries(12, 12, 9)
    store.close()


def test_a_snapshot_larger_than_a_chunk_round_trips(backend: Backend) -> None:
    data = os.urandom(2 * CHUNK_SIZE + CHUNK_SIZE // 2)
    store = backend.open()
    store.save(hard_state=HardState(2, None, 40), entries=[], snapshot=snapshot(40, 2, data))
    store = backend.reopen(store)
    assert store.load().snapshot == snapshot(40, 2, data)
    store.compact(snapshot(40, 2, data[:100]))  # a smaller one replaces it whole
    store = backend.reopen(store)
    assert store.load().snapshot == snapshot(40, 2, data[:100])
    store.close()


# -- the property test ------------------------------------------------------------------------

terms = st.integers(1, 6)
datas = st.binary(max_size=20)
Op = Ready | Snapshot | tuple[int, bytes] | None


@st.composite
def operations(draw: st.DrawFn) -> list[Op]:
    """A random sequence of valid saves (a Ready), compactions (a Snapshot), stagings (index
    and data; most for the compaction that follows), and reopens (None), each drawn to fit
    the state the previous ones leave."""
    model = Durable()
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, 12))):
        snap_index = model.snapshot.meta.index
        last = model.entries[-1].index if model.entries else snap_index
        kind = draw(st.sampled_from(["save", "save", "save", "compact", "stage", "reopen"]))
        if kind == "stage":  # staged, then never compacted to: invisible
            ops.append((draw(st.integers(0, last + 4)), draw(datas)))
            continue
        if kind == "compact":
            index = draw(st.integers(snap_index, last + 2))
            snap = Snapshot(SnapshotMeta(index, draw(terms)), draw(datas))
            if draw(st.booleans()):
                ops.append((index, snap.data))
            model.compact(snap)
            ops.append(snap)
            continue
        if kind == "reopen":
            ops.append(None)
            continue
        rd = Ready()
        if draw(st.booleans()):
            rd.hard_state = HardState(draw(terms), draw(st.none() | st.just("n1")), draw(terms))
        if draw(st.integers(0, 5)) == 0:
            snap_index = last = draw(st.integers(1, last + 4))
            rd.snapshot = Snapshot(SnapshotMeta(snap_index, draw(terms)), draw(datas))
        if draw(st.booleans()):
            start = draw(st.integers(snap_index + 1, last + 1))
            count = draw(st.integers(1, 5))
            rd.entries = [
                Entry(draw(terms), i, draw(st.sampled_from(EntryType)), draw(datas))
                for i in range(start, start + count)
            ]
        model.write(rd)
        ops.append(rd)
    return ops


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=100)
@given(ops=operations())
def test_random_saves_and_compactions_match_the_reference(kind: str, ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backend = Backend(kind, Path(tmp) / "data", chunk_size=7)  # most snapshots span chunks
        store = backend.open()
        model = Durable()
        for op in ops:
            if isinstance(op, Ready):
                store.save(hard_state=op.hard_state, entries=op.entries, snapshot=op.snapshot)
                model.write(op)
            elif isinstance(op, Snapshot):
                store.compact(op)
                model.compact(op)
            elif isinstance(op, tuple):
                store.stage(*op)
            else:
                store = backend.reopen(store)
            assert store.load() == PersistentState(model.hard_state, model.snapshot, model.entries)
        store = backend.reopen(store)
        assert store.load() == PersistentState(model.hard_state, model.snapshot, model.entries)
        store.close()


# -- the package itself -----------------------------------------------------------------------


def test_public_api_is_sorted_and_importable() -> None:
    import quicraft.storage as storage

    assert storage.__all__ == sorted(storage.__all__, key=lambda n: (not n.isupper(), n))
    for name in storage.__all__:
        assert hasattr(storage, name), name


def test_storage_builds_only_on_the_core() -> None:
    """Layer rule: storage never imports node, client, cli (or anything but quicraft.core)."""
    package = Path(__file__).resolve().parents[2] / "quicraft" / "storage"
    paths = list(package.glob("*.py"))
    assert paths, package
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):  # `from ..node import x` is quicraft.node
                base = resolve_name("." * node.level + (node.module or ""), "quicraft.storage")
                names = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
            for name in names:
                if name.startswith("quicraft"):
                    assert name.startswith(("quicraft.core", "quicraft.storage")), (
                        f"{path.name} imports {name}"
                    )
