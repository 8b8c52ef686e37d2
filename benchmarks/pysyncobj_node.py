"""One PySyncObj node for the side-by-side benchmark (see vs_pysyncobj.py).

A replicated dict (pysyncobj.batteries.ReplDict) in journal mode. With --drive, this node also
generates the load once a leader exists: `--clients` writes kept in flight (each completion
sends the next), for `--duration` seconds. It prints `{"started": true}` as the load begins
(the caller counts CPU from there) and one JSON line with the results at the end, whose
`driver_led` says whether this node led both when the load began and when it ended.

PySyncObj's own client API is in-process: where the driving node leads, its writes skip every
client hop; where it follows, each write is forwarded to the leader and its result comes back,
the same two hops that quicraft's separate client pays. Those are two different loads (on the
machine of 2026-12-02, about 5,100 against 3,500 writes/s at 16 in flight), so the caller picks
which one it measures with `--election`: a member with the shortest election timeout wins the
first election.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

from pysyncobj import SyncObj, SyncObjConf  # type: ignore[import-untyped]
from pysyncobj.batteries import ReplDict  # type: ignore[import-untyped]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--self", required=True, help="HOST:PORT of this node")
    parser.add_argument("--partners", required=True, help="HOST:PORT,... of the others")
    parser.add_argument("--journal", required=True, help="journal file path")
    parser.add_argument("--drive", action="store_true")
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

    store = ReplDict()
    conf = SyncObjConf(
        journalFile=args.journal,
        fullDumpFile=args.journal + ".dump",
        appendEntriesUseBatch=args.batch,
        raftMinTimeout=args.election[0],
        raftMaxTimeout=args.election[1],
    )
    node = SyncObj(args.self, args.partners.split(","), conf=conf, consumers=[store])
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
    node.destroy()
    return 0


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


def drive(store: ReplDict, clients: int, duration: float, value: bytes) -> dict[str, object]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    done = threading.Event()
    started = time.monotonic()
    until = started + duration
    in_flight = clients

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

        store.set(f"bench/{slot}/{count % 1000}", value, callback=finished)

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
    }


if __name__ == "__main__":
    sys.exit(main())
