"""One PySyncObj node for the side-by-side benchmark (see vs_pysyncobj.py).

A replicated dict (pysyncobj.batteries.ReplDict) in journal mode. With --drive, this node also
generates the load once a leader exists: `--clients` writes kept in flight (each completion
sends the next), for `--duration` seconds. It prints `{"started": true}` as the load begins
(the caller counts CPU from there) and one JSON line with the results at the end, whose
`driver_led` says whether this node led both when the load began and when it ended, and whose
`expected` is the fingerprint of the dict the load must leave behind: every value is stamped
with its writer and count, so the last write to each key is known. The node then keeps
serving until it is stopped.

With --report FILE, SIGUSR1 makes the node write its last applied index and the fingerprint of
its dict to FILE, which is how the caller checks after a run that the three replicas hold the
same contents and that these are what the load acknowledged (PySyncObj logs "state machine may
have diverged" whenever it drops log entries it had applied; this tells whether it did).

PySyncObj's own client API is in-process: where the driving node leads, its writes skip every
client hop; where it follows, each write is forwarded to the leader and its result comes back,
the same two hops that quicraft's separate client pays. Those are two different loads (on the
machine of 2026-12-02, about 5,100 against 3,500 writes/s at 16 in flight), so the caller picks
which one it measures with `--election`: a member with the shortest election timeout wins the
first election.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterable

try:  # not a dependency of quicraft: `--help` works without it, a run says what to install
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict
except ImportError:
    SyncObj = None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--self", required=True, help="HOST:PORT of this node")
    parser.add_argument("--partners", required=True, help="HOST:PORT,... of the others")
    parser.add_argument("--journal", required=True, help="journal file path")
    parser.add_argument("--drive", action="store_true")
    parser.add_argument("--report", help="on SIGUSR1, write the applied index and contents here")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument(
        "--election",
        type=_timeouts,
        default=(0.4, 1.4),
        metavar="MIN,MAX",
        help="this member's election timeout range in seconds (PySyncObj's default 0.4,1.4)",
    )
    parser.add_argument(
        "--batch",
        action="store_true",
        help="PySyncObj's default appendEntriesUseBatch=True: appends go out every 0.1 s "
        "(high latency); without it every command is sent at once (faster for this load)",
    )
    args = parser.parse_args()
    if SyncObj is None:
        parser.error("PySyncObj is not installed: pip install pysyncobj")

    store = ReplDict()
    conf = SyncObjConf(
        journalFile=args.journal,
        fullDumpFile=args.journal + ".dump",
        appendEntriesUseBatch=args.batch,
        raftMinTimeout=args.election[0],
        raftMaxTimeout=args.election[1],
    )
    node = SyncObj(args.self, args.partners.split(","), conf=conf, consumers=[store])
    if args.report:
        report_on_signal(node, store, args.report)
    if not args.drive:
        while True:
            time.sleep(3600)
    deadline = time.monotonic() + 30
    while node._getLeader() is None:  # no public accessor in PySyncObj 0.3
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no leader"}))
            return 1
        time.sleep(0.05)
    print(json.dumps({"started": True}), flush=True)  # the caller starts counting CPU here
    led_at_start = node._isLeader()  # private too, like _getLeader
    result = drive(store, args.clients, args.duration, b"x" * args.value_size)
    result["driver_led"] = led_at_start and node._isLeader()
    print(json.dumps(result))
    sys.stdout.flush()
    while True:  # until the caller has checked the replicas and stops this process
        time.sleep(3600)


def _timeouts(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        bounds = float(low), float(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX in seconds, got {text!r}") from None
    # What SyncObjConf.validate() asserts with the default heartbeat and connection timeout.
    if not 0.3 < bounds[0] < bounds[1] <= 3.5:
        raise argparse.ArgumentTypeError(f"PySyncObj needs 0.3 < MIN < MAX <= 3.5, got {text!r}")
    return bounds


def fingerprint(items: Iterable[tuple[str, bytes]]) -> str:
    """Equal for equal dict contents, whatever the order they were built in."""
    return hashlib.sha256(repr(sorted(items)).encode()).hexdigest()[:16]


def report_on_signal(node: SyncObj, store: ReplDict, path: str) -> None:
    def write_report() -> None:
        # Called once the load has ended, when neither changes any more.
        applied = node.getStatus()["last_applied"]
        contents = dict(store.rawData())
        report = {"applied": applied, "fingerprint": fingerprint(contents.items())}
        with open(path + ".part", "w") as out:
            json.dump(report, out)
        os.replace(path + ".part", path)

    # A signal handler must not wait on PySyncObj's locks: the work goes to a thread.
    signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=write_report).start())


def stamped(value: bytes, slot: int, count: int) -> bytes:
    """`value` with the writer and count in front (longer than `value` only if it is shorter
    than the stamp), so that every write's value is different."""
    stamp = f"{slot}:{count}:".encode()
    return stamp + value[len(stamp) :]


def drive(store: ReplDict, clients: int, duration: float, value: bytes) -> dict[str, object]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    done = threading.Event()
    started = time.monotonic()
    until = started + duration
    in_flight = clients
    last_write: dict[str, bytes] = {}  # key -> the value of the last write issued to it

    def issue(slot: int, count: int) -> None:
        sent = time.monotonic()

        def finished(result: object, error: object) -> None:
            nonlocal errors, in_flight
            now = time.monotonic()
            with lock:
                if error:
                    errors += 1
                else:
                    latencies.append(now - sent)
                if now >= until:
                    in_flight -= 1
                    if in_flight == 0:
                        done.set()
                    return
            issue(slot, count + 1)

        key, data = f"bench/{slot}/{count % 1000}", stamped(value, slot, count)
        last_write[key] = data  # each slot writes its keys one write at a time, in order
        store.set(key, data, callback=finished)

    for slot in range(clients):
        issue(slot, 0)
    done.wait(duration + 30)
    seconds = time.monotonic() - started
    ordered = sorted(latencies) or [0.0]
    return {
        "writes": len(latencies),
        "writes_per_s": len(latencies) / seconds,
        "write_p50_ms": statistics.median(ordered) * 1000,
        "write_p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "errors": errors,
        # After an error, or with writes still out, the last write to a key may or may not
        # have been applied: no expectation then.
        "expected": fingerprint(last_write.items()) if done.is_set() and not errors else None,
    }


if __name__ == "__main__":
    sys.exit(main())
