"""The key-value operations of a client, as methods with plain Python results."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .client import Client


def _bytes(value: bytes | str, field: str) -> bytes:
    """`value` as sent: a str as its UTF-8, a bytearray or memoryview as its bytes (type
    checkers let them pass for bytes). A str that has no UTF-8 form (a lone surrogate, as
    os.fsdecode makes of undecodable bytes) is refused like a bad key: InvalidRequest."""
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if not isinstance(value, str):
        return value  # anything else is the wire's to check
    _check_utf8(value, field)
    return value.encode()


def sendable_text(value: str, field: str) -> str:
    """`value` (a key or prefix) if it can be sent; InvalidRequest naming `field` if it is a
    str with no UTF-8 form. Anything else is the wire's to check."""
    if isinstance(value, str) and not value.isascii():
        _check_utf8(value, field)
    return value


def _check_utf8(value: str, field: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError as err:
        from .client import InvalidRequest  # client.py imports this module

        raise InvalidRequest("bad_request", f"{field!r} cannot be sent as UTF-8: {err}") from None


class KV:
    """The key-value operations of a Client, as `client.kv`. Keys are str; values are bytes
    (a str is sent as its UTF-8). Writes are applied once however often the client retries
    them; reads are linearizable unless `stale`.

    Every call raises ClientError when it fails (`code`, docs/client.md "Error codes"):
    timeout once the client's timeout has passed (a write's outcome is then unknown),
    forbidden (a reader's write, an identity the cluster refuses), session_expired (writes
    only), internal, or closed; InvalidRequest (bad_request), at once and unsent, for
    arguments no node accepts (an empty key or one over 4,096 bytes, say); RuntimeError
    when used from another event loop than the client's."""

    def __init__(self, client: Client):
        self._client = client

    async def set(self, key: str, value: bytes | str) -> int:
        """Store `value` under `key`; returns the revision (log index) of the write.
        Raises as every KV call does (see KV)."""
        result = await self._client.write(
            "set", {"key": sendable_text(key, "key"), "value": _bytes(value, "value")}
        )
        return int(result["revision"])

    async def get(self, key: str, *, stale: bool = False) -> bytes | None:
        """The value of `key`, or None. Linearizable unless `stale`, which reads the
        contacted node's state at once (possibly behind the leader). Raises as every KV
        call does (see KV), session_expired aside."""
        value, _ = await self.get_with_revision(key, stale=stale)
        return value

    async def get_with_revision(self, key: str, *, stale: bool = False) -> tuple[bytes | None, int]:
        """The value of `key` (or None) and the revision that last changed it (0 if there is no
        such key: never set, or deleted). Raises as `get`."""
        result = await self._client.call("get", {"key": sendable_text(key, "key"), "stale": stale})
        value = result.get("value")
        return (bytes(value) if value is not None else None), int(result["revision"])

    async def delete(self, key: str) -> bool:
        """Remove `key`; True if it existed. Raises as every KV call does (see KV)."""
        result = await self._client.write("delete", {"key": sendable_text(key, "key")})
        return bool(result["deleted"])

    async def incr(self, key: str, by: int = 1) -> int:
        """Add `by` to the integer stored at `key` (0 if absent); returns the new value.
        ClientError bad_request if the value there is not a 64-bit integer or the sum would
        overflow; InvalidRequest for a `by` beyond 64 bits; otherwise as every KV call."""
        result = await self._client.write("incr", {"key": sendable_text(key, "key"), "by": by})
        return int(result["value"])

    async def cas(self, key: str, expected: bytes | str | None, new: bytes | str) -> bool:
        """Set `key` to `new` only if it holds `expected` (None: only if absent); True if it
        did. Raises as every KV call does (see KV)."""
        swapped, _ = await self.cas_with_revision(key, expected, new)
        return swapped

    async def cas_with_revision(
        self, key: str, expected: bytes | str | None, new: bytes | str
    ) -> tuple[bool, int]:
        """cas, and the revision of that write: when it swapped, a fencing token that grows
        with every later change of the key (examples/lock_and_election.py). Raises as cas."""
        want = None if expected is None else _bytes(expected, "expected")
        result = await self._client.write(
            "cas", {"key": sendable_text(key, "key"), "expected": want, "new": _bytes(new, "new")}
        )
        return bool(result["ok"]), int(result["revision"])

    async def keys(self, prefix: str = "", *, stale: bool = False) -> list[str]:
        """The keys that start with `prefix`, sorted. Linearizable unless `stale`, as for
        `get`; raises as `get`."""
        result = await self._client.call(
            "keys", {"prefix": sendable_text(prefix, "prefix"), "stale": stale}
        )
        return [str(k) for k in result["keys"]]
