"""The replicated key-value model the simulated clients drive.

Commands are small JSON documents; each carries the client and its sequence number so that a
node can hand the result back to whoever proposed it. Values are integers so that `incr`
always makes sense. Results follow quicraft.sim.linearizability's model exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Command:
    client: int
    seq: int
    kind: str  # "put" | "incr" | "cas" | "del" (reads go through ReadIndex instead)
    key: str
    args: tuple[int | None, ...] = ()

    def encode(self) -> bytes:
        return json.dumps([self.client, self.seq, self.kind, self.key, list(self.args)]).encode()

    @classmethod
    def decode(cls, data: bytes) -> Command:
        client, seq, kind, key, args = json.loads(data)
        return cls(client, seq, kind, key, tuple(args))


@dataclass(slots=True)
class KVStore:
    data: dict[str, int] = field(default_factory=dict)

    def apply(self, cmd: Command) -> object:
        key, args = cmd.key, cmd.args
        if cmd.kind == "put":
            assert args[0] is not None
            self.data[key] = args[0]
            return None
        if cmd.kind == "incr":
            assert args[0] is not None
            self.data[key] = self.data.get(key, 0) + args[0]
            return self.data[key]
        if cmd.kind == "cas":
            expected, new = args
            if self.data.get(key) != expected:
                return False
            assert new is not None
            self.data[key] = new
            return True
        if cmd.kind == "del":
            return self.data.pop(key, None) is not None
        raise ValueError(f"unknown command {cmd.kind!r}")

    def get(self, key: str) -> int | None:
        return self.data.get(key)

    def snapshot(self) -> bytes:
        return json.dumps(self.data, sort_keys=True).encode()

    @classmethod
    def restore(cls, data: bytes) -> KVStore:
        return cls(dict(json.loads(data))) if data else cls()
