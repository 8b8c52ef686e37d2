"""The contract between the Raft node and the application it replicates.

Rules:
- The node calls `apply` once for every committed application entry, in log order, on every
  replica. Replicas stay identical only if `apply` is a pure function of the state and the
  entry: no clock, no randomness, no I/O, no iteration over anything unordered.
- Entries in the log are already committed: `apply` can refuse a command (by returning an error
  result) but must never raise because of the bytes it was given.
- `snapshot()` captures everything `apply` depends on; `restore()` replaces the state with it.
- A state machine may also offer `capture()`: a copy of its state now, and a function that
  encodes that copy into exactly what snapshot() would have returned. The node calls
  capture() on its event loop and the function in another thread while `apply` goes on, so
  the copy must share nothing that `apply` changes in place (snapshot_encoder below).
- It may also offer `prepare(data)`: restore() in two steps, the decoding and checking
  (ValueError, the state untouched, if `data` is invalid) from any thread, touching nothing
  of the state, and the function it returns, which makes it the state, where `apply` is
  called. The node prepares a snapshot from the leader in a worker thread
  (snapshot_installer below), so that its loop goes on while a large one is decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

#: What `apply` hands back to the proposer: a plain dict (the wire's result map), or an error
#: `{"error": code, "message": text}` whose code is one of the wire protocol's error codes.
Result = dict[str, object]


def error_result(code: str, message: str) -> Result:
    """An error result; `code` is a wire error code such as "bad_request"."""
    return {"error": code, "message": message}


def is_error(result: Result) -> bool:
    return "error" in result


@runtime_checkable
class StateMachine(Protocol):
    """A deterministic application driven by the committed log."""

    def apply(self, index: int, data: bytes) -> object:
        """Apply the committed entry at `index` whose payload is `data`; return its result.

        Must be deterministic: the result and the new state may depend only on the current
        state, `index` and `data`. Anything time-like (e.g. session expiry) must come from
        the command's own contents — a timestamp the leader wrote into it — never from the
        local clock, which differs between replicas and between a first run and a replay.
        Must not raise on malformed `data`: it is already committed, so the answer is an
        error result, the same on every replica. Indexes only ever increase.
        """
        ...

    def snapshot(self) -> bytes:
        """Serialize the whole state, including the index of the last applied entry.

        Two replicas that applied the same entries must produce the same bytes.
        """
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with one produced by `snapshot`.

        Raises ValueError, leaving the current state untouched, if `data` is not a valid
        snapshot of this state machine.
        """
        ...


def snapshot_encoder(state_machine: StateMachine) -> Callable[[], bytes]:
    """What encodes a snapshot of `state_machine` as it is now, to call from any thread: its
    capture() if it has one, else its snapshot() taken now."""
    capture: Callable[[], Callable[[], bytes]] | None = getattr(state_machine, "capture", None)
    if capture is not None:
        return capture()
    data = state_machine.snapshot()
    return lambda: data


def snapshot_installer(state_machine: StateMachine, data: bytes) -> Callable[[], None]:
    """To call from any thread: what makes snapshot `data` the state of `state_machine`, to
    call where `apply` is called; its prepare(data) if it has one (which raises ValueError
    here if `data` is invalid), else its restore(data) to be made then."""
    prepare: Callable[[bytes], Callable[[], None]] | None = getattr(state_machine, "prepare", None)
    if prepare is not None:
        return prepare(data)
    return lambda: state_machine.restore(data)
