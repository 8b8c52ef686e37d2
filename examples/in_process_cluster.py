"""Three Raft cores in one process, wired by lists: the Ready loop at its simplest.

A real runtime persists to disk and sends over the network; here both are in memory, which is
all the core needs to elect a leader, replicate, commit and serve a linearizable read.
Run: python examples/in_process_cluster.py
"""

from __future__ import annotations

import random

from quicraft.core import Config, EntryType, Message, RaftCore, Role, bootstrap_state

ids = ["n1", "n2", "n3"]
cores = {i: RaftCore(Config(i), random.Random(i), bootstrap_state(ids)) for i in ids}
in_flight: list[Message] = []
applied: dict[str, list[bytes]] = {i: [] for i in ids}
reads: list[tuple[str, bytes, int]] = []


def run_ready_loop() -> None:
    """Deliver messages and handle every Ready until the cluster is quiet."""
    while True:
        for core in cores.values():
            while core.has_ready():
                rd = core.ready()
                # (a real runtime writes rd.snapshot, rd.entries and rd.hard_state to disk here)
                in_flight.extend(rd.messages + rd.persisted_messages)
                applied[core.id] += [
                    e.data for e in rd.committed_entries if e.type is EntryType.NORMAL
                ]
                reads.extend((core.id, r.context, r.index) for r in rd.read_states)
                core.advance(rd)
        if not in_flight:
            return
        batch, in_flight[:] = list(in_flight), []
        for m in batch:
            cores[m.to].step(m)


while not any(c.role is Role.LEADER for c in cores.values()):
    for core in cores.values():
        core.tick()
    run_ready_loop()

leader = next(c for c in cores.values() if c.role is Role.LEADER)
print(f"{leader.id} leads term {leader.term}")
for word in (b"hello", b"raft"):
    index, term = leader.propose(word)
    print(f"proposed {word!r} at index {index}, term {term}")
run_ready_loop()
leader.read_index(b"my-read")
run_ready_loop()
print("applied on every node:", {i: [d.decode() for d in data] for i, data in applied.items()})
print("linearizable read confirmed:", reads)
