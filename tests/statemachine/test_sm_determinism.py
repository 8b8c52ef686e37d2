"""Determinism: a replica that applied every entry and one that installed a snapshot taken at
any point, then applied the rest, give the same results and hold the same state, down to
the snapshot's bytes; and so do two processes whose string hashing differs (PYTHONHASHSEED).

The logs are random but fixed by their seed, and mix what the others test one at a time:
non-ASCII keys (ordered by code point), incr at the 64-bit bounds, cas with absent, sessions
that expire, are evicted and acknowledge, the reserved commands, membership changes and
entries that are not commands. Run as a script, this file prints the digest of them all.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys

import quicraft
from quicraft.statemachine import KVStore, encode_command, snapshot_encoder, snapshot_installer

KEYS = ["a", "ab", "a/1", "é", "e\u0301", "\uffff", "\U00010000", "日本", "\x00", "z" * 60]
VALUES = [b"", b"0", b"1", b"-1", b"007", b"x", b"9223372036854775807", b"-9223372036854775808"]
BYS = [1, -1, 0, 5, (1 << 63) - 1, -(1 << 63)]
#: Weighted: more writes than anything else.
KINDS = ["register", "set", "set", "delete", "incr", "incr", "cas", "cas", "junk", "found"]
KINDS += ["address", "member"]
#: A log is a list of these: an entry's bytes, or (node, removed): a membership change.
Item = bytes | tuple[str, bool]


def random_log(rng: random.Random, length: int) -> list[Item]:
    log: list[Item] = []
    registered: list[int] = []
    clock = 0
    for _ in range(length):
        clock = max(0, clock + rng.choice([0, 0, 1, 10, 100, 600, -50]))  # timeout: 1000
        kind = rng.choice(KINDS)
        if kind == "junk":
            log.append(rng.randbytes(rng.randrange(6)))
        elif kind == "member":
            log.append((rng.choice(["n1", "n2", "n3"]), rng.random() < 0.5))
        elif kind == "register":
            registered.append(len(log) + 1)
            log.append(encode_command("register", {}, clock))
        elif kind == "found":
            cluster_id = rng.choice(["abcdef01", "12345678"])
            log.append(encode_command("found", {"cluster_id": cluster_id}, clock))
        elif kind == "address":
            where = {"node": rng.choice(["n1", "n2"]), "address": rng.choice(["", "h:1", "h:2"])}
            if rng.random() < 0.5:
                where["name"] = rng.choice(["", "one", "two"])
            log.append(encode_command("address", where, clock))
        else:
            log.append(encode_command(kind, _write_args(rng, kind, registered), clock))
    return log


def _write_args(rng: random.Random, kind: str, registered: list[int]) -> dict[str, object]:
    args: dict[str, object] = {"key": rng.choice(KEYS)}
    if kind == "set":
        args["value"] = rng.choice(VALUES)
    elif kind == "incr" and rng.random() < 0.8:
        args["by"] = rng.choice(BYS)
    elif kind == "cas":
        args["expected"] = rng.choice([None, None, *VALUES])
        args["new"] = rng.choice(VALUES)
    if registered and rng.random() < 0.6:
        args["session"] = rng.choice([*registered[-4:], 999_999])  # and one never registered
        seq = args["seq"] = rng.randrange(8)  # few seqs: repeats, and results pushed out
        if rng.random() < 0.3:
            args["ack"] = rng.randrange(seq + 1)
    return args


def new_store() -> KVStore:
    # Small limits, so that sessions expire, are evicted and drop results.
    return KVStore(session_timeout_ms=1000, max_results_per_session=3, max_sessions=3)


def run(store: KVStore, log: list[Item], start: int = 0) -> list[object]:
    results: list[object] = []
    for position in range(start, len(log)):
        item = log[position]
        if isinstance(item, bytes):
            results.append(store.apply(position + 1, item))
        else:  # the node tells the store as it applies a configuration entry
            store.membership_changed(*item)
            results.append(None)
    return results


def state(store: KVStore) -> tuple[object, ...]:
    sessions = [
        (sid, s.last_active_ms, s.floor, list(s.results.items()))
        for sid, s in store.sessions.items()
    ]
    return (
        store.last_applied,
        store.keys(),
        [store.get(key) for key in store.keys()],  # noqa: SIM118 (not a dict)
        store.sessions.now_ms,
        sessions,
        store.cluster_id,
        sorted(store.addresses.items()),
        sorted(store.names.items()),
        sorted(store.removed),
    )


def check_seed(seed: int) -> str:
    """Check one random log; the digest of its results and final snapshot."""
    rng = random.Random(seed)
    log = random_log(rng, rng.randrange(1, 100))
    whole = new_store()
    results = run(whole, log)
    listed = whole.keys()
    assert listed == sorted(listed)  # by code point, which is the order of the UTF-8 bytes
    assert [key.encode() for key in listed] == sorted(key.encode() for key in listed)

    cut = rng.randrange(len(log) + 1)
    first = new_store()
    run(first, log[:cut])
    encode = snapshot_encoder(first)  # what the runtime does: a copy now, encoded later
    run(first, log, cut)  # ... while applying goes on
    taken = encode()
    resumed = new_store()
    resumed.apply(1, encode_command("set", {"key": "replaced", "value": b""}, 0))
    snapshot_installer(resumed, taken)()  # decoded as a worker thread does, then installed
    assert run(resumed, log, cut) == results[cut:], (seed, cut)
    assert state(resumed) == state(whole), (seed, cut)
    assert state(first) == state(whole), (seed, cut)
    data = whole.snapshot()
    assert resumed.snapshot() == data == first.snapshot(), (seed, cut)
    again = new_store()
    again.restore(data)
    assert again.snapshot() == data  # restored, then taken again: the same bytes
    return hashlib.sha256(repr((results, data)).encode()).hexdigest()


def digest(seeds: range) -> str:
    return hashlib.sha256("".join(check_seed(seed) for seed in seeds).encode()).hexdigest()


SEEDS = range(150)


def test_a_restored_replica_goes_on_as_one_that_applied_everything() -> None:
    digest(SEEDS)


def test_the_same_log_gives_the_same_results_whatever_the_hash_seed() -> None:
    here = digest(SEEDS)
    # The quicraft this test imports, whatever the script's own folder puts first on the path.
    root = os.path.dirname(os.path.dirname(quicraft.__file__))
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": path}
        out = subprocess.run(
            [sys.executable, __file__], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == here, hash_seed


if __name__ == "__main__":
    print(digest(SEEDS))
