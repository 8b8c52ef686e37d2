"""A process killed (SIGKILL) while it writes its log and takes snapshots, as a node does:
chunks staged from a thread of their own while the log's saves go on, then the compaction,
then the covered entries deleted a slice per save. Whatever the moment of the kill, the store
opens again, holds every write that returned, and holds nothing but what was written.

A killed process loses nothing the kernel already has, so this shows LevelDB's batches are
whole across a crash and that our records fit together at every step; not what a power cut
does to writes that were never synced (test_leveldb_damage.py cuts the files for that).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from quicraft.core import HardState
from quicraft.storage import LevelDBStorage, check_hard_state

#: The child writes entries of term 1 whose data is given by their index, 20 per save; every
#: 100 entries it stages a snapshot of the data given by its index (about 40 chunks) in a
#: thread, saving on meanwhile, then compacts to it. It prints what each call that returned
#: made durable.
WRITER = textwrap.dedent(
    """
    import random, sys, threading
    from pathlib import Path
    from quicraft.core import Entry, HardState, Membership, Snapshot, SnapshotMeta
    from quicraft.storage import LevelDBStorage

    def snapshot_data(index):
        return random.Random(index).randbytes(600_000)

    store = LevelDBStorage(Path(sys.argv[1]), chunk_size=1 << 14)
    state = store.load()
    last = state.entries[-1].index if state.entries else state.snapshot.meta.index
    staging = None
    while True:
        entries = [Entry(1, i, data=b"entry %d" % i) for i in range(last + 1, last + 21)]
        store.save(hard_state=HardState(1, "n1", last + 20), entries=entries, snapshot=None)
        last += 20
        print("saved", last, flush=True)
        if staging is None and last % 100 == 0:
            index, data = last, snapshot_data(last)
            staging = threading.Thread(target=store.stage, args=(index, data))
            staging.start()
            print("staging", index, flush=True)
        elif staging is not None and not staging.is_alive():
            members = Membership(frozenset({"n1"}))
            store.compact(Snapshot(SnapshotMeta(index, 1, members), data))
            print("compacted", index, flush=True)
            staging = None
    """
)


def snapshot_data(index: int) -> bytes:
    return random.Random(index).randbytes(600_000)


def run_until_killed(path: Path, moment: str, delay: float) -> tuple[int, int]:
    """Run the writer, kill it `delay` s after it printed `moment` for the second time; the
    last save and compaction it reported."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    saved = compacted = seen = 0
    assert child.stdout is not None
    try:
        for line in child.stdout:
            what, index = line.split()
            if what == "saved":
                saved = int(index)
            elif what == "compacted":
                compacted = int(index)
            if what == moment:
                seen += 1
                if seen == 2:
                    time.sleep(delay)
                    break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL  # not an error of its own before the kill
    return saved, compacted


def test_a_process_killed_while_it_snapshots_loses_no_write_that_returned(
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    for round_ in range(8):
        moment = ("staging", "compacted")[round_ % 2]  # amid the chunks, or the trimming
        saved, compacted = run_until_killed(tmp_path, moment, rng.uniform(0, 0.05))
        with LevelDBStorage(tmp_path) as store:
            state = store.load()  # every record sound, the log whole after the snapshot
        check_hard_state(state, tmp_path)
        snapshot = state.snapshot
        last = state.entries[-1].index if state.entries else snapshot.meta.index
        assert last >= saved, f"round {round_}: save up to {saved} returned, the log ends at {last}"
        assert snapshot.meta.index >= compacted
        assert snapshot.meta.index % 100 == 0
        if snapshot.meta.index:
            assert snapshot.data == snapshot_data(snapshot.meta.index)
        assert all(entry.data == b"entry %d" % entry.index for entry in state.entries)
        assert state.hard_state == HardState(1, "n1", last)
