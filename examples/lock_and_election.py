"""A lease lock and leader election on a quicraft cluster, built from compare-and-set.

    python examples/lock_and_election.py --cluster c1 --endpoints 127.0.0.1:7401,127.0.0.1:7402

Candidates (tasks of this one process, each with a connection of its own, as separate programs
would have) campaign for the key "election/NAME". The one holding the lock there is the leader.
After --lead-for seconds a leader steps down (gives the lock back) or, every other time,
"crashes" (simply stops renewing), and another candidate takes over. --duration ends the demo.

The lock (LeaseLock) is a lease kept in one key, whose value is "held|OWNER|NONCE" or
"free|OWNER" (a random NONCE makes every write unique):

- acquire: cas(key, expected=what I just read, new="held|me|NONCE") when the key is absent, free,
  or holds a lease that has expired. The cluster swaps only if the key still holds what I read,
  so of several contenders exactly one wins.
- renew: every lease/3, cas(my last value -> "held|me|NEW-NONCE"). Each renewal changes the
  value, which is how the others see that the holder is alive.
- release: cas(my last value -> "free|me"). Not `delete`: a delete is unconditional, and a holder
  whose lease has already passed to another would delete its successor's lock.

Expiry needs no synchronized clocks. No timestamp is written into the store: a contender takes
over only when it has seen the same (value, revision) unchanged for longer than the lease (plus
a 10% margin) on its own monotonic clock, counted from the moment its read *returned*. The holder
counts its lease from the moment it *sent* the cas that wrote that value — earlier — so the
holder's lease always ends before a contender may take over. The one assumption is that clocks
run at about the same rate (real ones agree to parts per million; the margin covers far more).

Limits, as for any lease (etcd's, ZooKeeper's, Chubby's): a holder that pauses between checking
its lease and acting on it (a GC pause, a swapped-out process, a stalled network) may act after
its lease has passed to another. Mutual exclusion is only as good as the lease; so a resource
the lock protects should check a fencing token: the revision (log index) of the cas that won the
lock. Revisions only grow, so every new holder's token is higher than every earlier holder's; the
resource remembers the highest token it has seen and refuses lower ones (FencedResource below
stands in for the database or file store that would do it).

What the cluster contributes is what makes the handover safe: a cas is linearizable (ordered by
the Raft log and committed by a majority before it is answered, so it survives the loss of a
node), and the client's sessions apply a retried write exactly once. A cas whose answer is lost
(timeout) has an unknown outcome: the next attempt reads the key and recognizes its own value.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field

import quicraft
from quicraft.client import Client, ClientError
from quicraft.transport import IdentityError
from quicraft.transport.address import parse_address

#: A contender waits this fraction of the lease longer than the lease before taking over.
MARGIN = 0.1
START = time.monotonic()


def log(text: str) -> None:
    print(f"[{time.monotonic() - START:6.2f}s] {text}", flush=True)


def held(owner: str) -> bytes:
    return f"held|{owner}|{os.urandom(4).hex()}".encode()


def owner_of(value: bytes) -> str:
    parts = value.decode(errors="replace").split("|")
    return parts[1] if len(parts) > 1 else "?"


def outcome_unknown(err: BaseException) -> bool:
    """A write that timed out may or may not have been applied; other errors are real."""
    return isinstance(err, TimeoutError) or (isinstance(err, ClientError) and err.code == "timeout")


@dataclass(slots=True)
class Lease:
    """What a holder knows of its hold on the lock."""

    value: bytes  #: what it last wrote to the key
    token: int  #: the fencing token: the revision of the cas that won the lock
    valid_until: float  #: on the holder's monotonic clock; past it, the holder must not act


class LeaseLock:
    """A lease on `key` for `owner`, kept by compare-and-set (see the module docstring)."""

    def __init__(self, client: Client, key: str, owner: str, lease_s: float):
        self.client, self.key, self.owner, self.lease_s = client, key, owner, lease_s
        self._seen: tuple[bytes | None, int] | None = None  # the last (value, revision) read
        self._seen_since = 0.0  # when that was first read, on our monotonic clock
        self._unknown: tuple[bytes, float] | None = None  # (new, sent at) of a timed-out cas
        #: After a successful acquire: whom it took the lock from and why (None: it was unset).
        self.took_over: str | None = None

    async def _cas(self, expected: bytes | None, new: bytes) -> tuple[bool, int]:
        # The revision of the write that swapped is the fencing token.
        return await self.client.kv.cas_with_revision(self.key, expected, new)

    async def try_acquire(self) -> Lease | None:
        """One attempt: the lease if this owner now holds the lock, else None."""
        value, revision = await self.client.kv.get_with_revision(self.key)
        now = time.monotonic()
        if self._unknown is not None:
            mine, sent = self._unknown
            self._unknown = None
            if value == mine and now < sent + self.lease_s:
                # Our timed-out cas was applied after all: the key's revision is that cas's.
                self.took_over = None  # from whom is not known any more
                return Lease(mine, revision, sent + self.lease_s)
        if value is None:
            why = None
        elif value.startswith(b"free|"):
            why = f"{owner_of(value)} (it stepped down)"
        else:
            if (value, revision) != self._seen:
                self._seen, self._seen_since = (value, revision), now
                return None
            if now - self._seen_since <= self.lease_s * (1 + MARGIN):
                return None  # its holder may still be within its lease
            why = f"{owner_of(value)} (its lease expired)"
        new = held(self.owner)
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self.lease_s):  # any later, the lease would be over
                ok, token = await self._cas(value, new)
        except (TimeoutError, ClientError) as err:
            if not outcome_unknown(err):
                raise
            self._unknown = (new, sent)
            return None
        if not ok or time.monotonic() >= sent + self.lease_s:
            return None  # lost the race (or won too late: it will expire like anyone's)
        self.took_over = why
        return Lease(new, token, sent + self.lease_s)

    async def renew(self, lease: Lease) -> bool:
        """Extend the lease; False if it is lost, or may be (which must count as lost)."""
        new = held(self.owner)
        sent = time.monotonic()
        if sent >= lease.valid_until:
            return False
        try:
            async with asyncio.timeout(lease.valid_until - sent):
                ok, _ = await self._cas(lease.value, new)
        except (TimeoutError, ClientError) as err:
            if not outcome_unknown(err):
                raise
            return False
        if ok:
            lease.value, lease.valid_until = new, sent + self.lease_s
        return ok

    async def release(self, lease: Lease) -> None:
        """Give the lock back at once, if it is still ours (else it expires by itself)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.lease_s):
                await self._cas(lease.value, f"free|{self.owner}".encode())


class FencedResource:
    """Stands in for what the lock protects: it refuses work whose fencing token is lower than
    one it has already seen, so a holder that lost its lease unawares cannot undo its
    successor's work."""

    def __init__(self) -> None:
        self.highest = 0

    def write(self, who: str, token: int) -> bool:
        if token < self.highest:
            log(f"resource refused {who}: fencing token {token} < {self.highest}")
            return False
        self.highest = token
        return True


@dataclass(slots=True)
class Election:
    """What the candidates share: the demo's settings and its script."""

    key: str
    lease_s: float
    lead_for: float
    resource: FencedResource
    stop: asyncio.Event
    crash_next: bool = False  # leaders take turns: step down, crash, step down, ...
    tokens: list[int] = field(default_factory=list)  #: of every term, in order

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the demo stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), max(0.0, seconds))


async def candidate(number: int, client: Client, election: Election) -> None:
    """Campaign for leadership until the demo stops; lead whenever elected."""
    name = f"candidate {number}"
    lock = LeaseLock(client, election.key, name, election.lease_s)
    while not election.stop.is_set():
        try:
            lease = await lock.try_acquire()
        except ClientError as err:
            if not outcome_unknown(err):
                raise
            log(f"{name}: no answer from the cluster ({err}); trying again")
            continue
        if lease is None:
            await election.pause(election.lease_s / 4)
            continue
        if lock.took_over is not None:
            log(f"{name} took over from {lock.took_over}")
        log(f"{name} is leader (fencing token {lease.token})")
        election.tokens.append(lease.token)
        if await lead(name, lock, lease, election):
            continue  # stepped down for now, or lost the lease: campaign again
        log(f"{name} crashed (it stops renewing; the others wait out its lease)")
        await election.pause(2 * election.lease_s)
        if not election.stop.is_set():
            log(f"{name} restarted")
            lock = LeaseLock(client, election.key, name, election.lease_s)  # a crash forgets all


async def lead(name: str, lock: LeaseLock, lease: Lease, election: Election) -> bool:
    """Lead until the tenure ends or the lease is lost; False if the leader "crashes"."""
    tenure_ends = time.monotonic() + election.lead_for
    while True:
        # Check the lease right before acting, and let the resource check the token.
        if time.monotonic() >= lease.valid_until:
            log(f"{name} lost leadership (its lease ran out)")
            return True
        if not election.resource.write(name, lease.token):
            log(f"{name} lost leadership (the resource has seen a newer token)")
            return True
        await election.pause(lease.valid_until - time.monotonic() - election.lease_s * 2 / 3)
        if election.stop.is_set() or time.monotonic() >= tenure_ends:
            break
        if not await lock.renew(lease):
            log(f"{name} lost leadership (could not renew its lease in time)")
            return True
    if election.crash_next and not election.stop.is_set():
        election.crash_next = False
        return False
    election.crash_next = True
    log(f"{name} stepped down")  # before the release: no one else may lead before this line
    await lock.release(lease)
    await election.pause(2 * election.lease_s)  # sit out a while, so that another takes over
    return True


async def elect(args: argparse.Namespace) -> None:
    election = Election(
        f"election/{args.election}", args.lease, args.lead_for, FencedResource(), asyncio.Event()
    )
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                quicraft.connect(args.endpoints, args.cluster, args.certs, args.name, args.lease)
            )
            for _ in range(args.candidates)
        ]
        try:
            async with asyncio.TaskGroup() as group:
                for number, client in enumerate(clients):
                    group.create_task(candidate(number, client, election))
                await asyncio.sleep(args.duration)
                election.stop.set()
        except* ClientError as failed:
            raise failed.exceptions[0] from None
    log(f"done: {len(election.tokens)} terms, fencing tokens {election.tokens}")


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def endpoints(text: str) -> str:
    try:
        for endpoint in text.split(","):
            parse_address(endpoint.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cluster", required=True, help="the cluster's name")
    parser.add_argument("--endpoints", required=True, type=endpoints, help="HOST:PORT,...")
    parser.add_argument("--certs", default="certs", help="folder of the cluster's keys")
    parser.add_argument("--name", default="admin", help="identity (role client or admin)")
    parser.add_argument("--election", default="demo", help="campaign for key election/NAME")
    parser.add_argument(
        "--candidates",
        type=int,
        default=3,
        choices=range(1, 17),
        metavar="N",
        help="how many (1 to 16)",
    )
    parser.add_argument("--lease", type=positive, default=3.0, help="lease in seconds")
    parser.add_argument("--lead-for", type=positive, default=6.0, help="seconds each leader leads")
    parser.add_argument("--duration", type=positive, default=40.0, help="seconds the demo runs")
    args = parser.parse_args()
    try:
        asyncio.run(elect(args))
    except (ClientError, IdentityError) as err:
        sys.exit(f"lock_and_election: error: {err}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
