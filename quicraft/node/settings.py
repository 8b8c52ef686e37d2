"""Settings of a running node, and the presets that pick sensible timings for a purpose.

The core counts time in ticks; the runtime turns ticks into wall-clock time with `tick_ms`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from quicraft.discovery import DiscoverySettings
from quicraft.telemetry import NO_TELEMETRY, TelemetrySettings
from quicraft.transport.address import Address


@dataclass(frozen=True, slots=True)
class Timings:
    """Election, heartbeat and snapshot settings; see PRESETS for the documented choices."""

    tick_ms: int
    #: A follower waits a random [election_tick, 2 * election_tick) ticks before campaigning.
    election_tick: int
    heartbeat_tick: int
    #: Take a snapshot (and compact the log) every this many applied entries.
    snapshot_every: int
    #: Client sessions idle for longer than this (by leader-stamped log time) expire.
    session_timeout_ms: int = 10 * 60 * 1000

    def election_timeout_s(self) -> float:
        return self.tick_ms * self.election_tick / 1000


#: test: fast failover for test suites on one machine (elections in 0.2-0.4 s).
#: dev:  a laptop or a LAN where quick failover matters more than spurious elections (0.5-1 s).
#: prod: tolerant of GC pauses and busy hosts (1-2 s); snapshots rarely, logs kept longer.
PRESETS: dict[str, Timings] = {
    "test": Timings(tick_ms=20, election_tick=10, heartbeat_tick=2, snapshot_every=200),
    "dev": Timings(tick_ms=50, election_tick=10, heartbeat_tick=2, snapshot_every=10_000),
    "prod": Timings(tick_ms=100, election_tick=10, heartbeat_tick=2, snapshot_every=50_000),
}


_QUIET = DiscoverySettings(enabled=False)

#: Connections one client identity may hold open to a node at once (Consul's
#: limits.rpc_max_conns_per_client has the same default); one client needs one, plus one
#: per events subscription.
MAX_CONNECTIONS_PER_IDENTITY = 100


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """What a Node needs to run; checked when made (a wrong field raises TypeError or
    ValueError naming it). Addresses are (host, port) tuples (transport.address.parse_address)."""

    cluster: str
    name: str
    data_dir: Path
    certs_dir: Path
    listen: tuple[str, int]
    #: Addresses of the other founding members; empty means "found a cluster of one".
    peers: tuple[tuple[str, int], ...] = ()
    timings: Timings = PRESETS["dev"]
    #: A fresh node neither founds a cluster nor dials founders: it serves Raft connections
    #: and waits for a leader to add it (`quicraft mgmt add-member`). No effect once it has data.
    wait_to_be_added: bool = False
    #: mDNS and --join hints (node/lan.py). Off unless asked for: a library node stays quiet;
    #: the command line turns it on.
    discovery: DiscoverySettings = _QUIET
    #: A fresh node found by discovery waits for this many verified unformed nodes of its
    #: cluster name, itself included, before one of them founds the cluster (node/forming.py).
    expect: int = 1
    #: The leader promotes learners it added while the cluster has fewer voters than this.
    voters: int = 3
    #: Run node/lan.py even with neither mDNS nor --join (`quicraft node` without --peers):
    #: the cluster gets an id and the leader adds the nodes that say hello to it.
    lan: bool = False
    #: Traces, metrics and log format (quicraft/telemetry); all off by default.
    telemetry: TelemetrySettings = NO_TELEMETRY
    #: Connections one identity may hold open to this node from one host, on the client,
    #: management and events ALPNs together (transport/per_identity.py); 0: no limit. Raft
    #: is not counted.
    max_connections_per_identity: int = MAX_CONNECTIONS_PER_IDENTITY

    def __post_init__(self) -> None:
        """Refuse what a program may get wrong here, naming the field: start() would otherwise
        fail obscurely, or dial each character of an address string for ever."""
        for field in ("data_dir", "certs_dir"):
            object.__setattr__(self, field, _path(field, getattr(self, field)))
        object.__setattr__(self, "listen", _address("listen", self.listen))
        if isinstance(self.peers, str) or not isinstance(self.peers, tuple | list):
            raise TypeError(
                f"NodeSettings.peers: expected a tuple of (host, port) tuples, not {self.peers!r}"
            )
        object.__setattr__(self, "peers", tuple(_address("peers", p) for p in self.peers))
        for field in ("expect", "voters"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"NodeSettings.{field}: expected a whole number >= 1, not {value!r}"
                )
        limit = self.max_connections_per_identity
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(
                "NodeSettings.max_connections_per_identity: expected a whole number >= 0 "
                f"(0: no limit), not {limit!r}"
            )

    @property
    def discovering(self) -> bool:
        """Whether this node looks for peers itself: mDNS on, or --join addresses to dial."""
        return self.discovery.enabled or bool(self.discovery.join)

    @property
    def forming(self) -> bool:
        """Whether node/lan.py runs: discovering, or asked to (`lan`)."""
        return self.lan or self.discovering

    def with_timings(self, **changes: int) -> NodeSettings:
        return dataclasses.replace(self, timings=dataclasses.replace(self.timings, **changes))


def _path(field: str, value: object) -> Path:
    if isinstance(value, str | os.PathLike) and not isinstance(os.fspath(value), bytes):
        return Path(value)
    raise TypeError(f"NodeSettings.{field}: expected a path (str or Path), not {value!r}")


def _address(field: str, value: object) -> Address:
    """`value` as a (host, port) tuple, or an error that names `field`."""
    if isinstance(value, str):
        raise TypeError(
            f"NodeSettings.{field}: {value!r} is a string; give a (host, port) tuple, or "
            f"quicraft.transport.address.parse_address({value!r})"
        )
    if not (
        isinstance(value, tuple | list)
        and len(value) == 2
        and isinstance(value[0], str)
        and value[0]
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    ):
        raise TypeError(f"NodeSettings.{field}: expected a (host, port) tuple, not {value!r}")
    host, port = value
    if not 0 < port < 65536:
        raise ValueError(f"NodeSettings.{field}: port {port} is not in 1-65535 ({value!r})")
    return host, port
