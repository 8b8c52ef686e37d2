"""The TXT record of a quicraft mDNS announcement: what we say about ourselves, and strict
parsing of what others say.

Rules:

- A TXT record is a run of length-prefixed strings `key=value` (RFC 6763 §6). Keys are
  printable ASCII without `=`, compared case-insensitively; a key seen twice keeps its first
  value (§6.4). Zero-length strings are skipped (an empty record is one zero byte, §6.1).
- The whole record is bounded (MAX_TXT_BYTES): ours is about 120 bytes.
- Our keys (TXT_KEYS) must all be there and valid; unknown keys are ignored, so a later
  version may add some. A key without `=` (a boolean attribute) is malformed for our keys.
- Everything here comes off the wire from anyone on the LAN: parse_txt raises RecordError and
  nothing else, whatever the bytes.
- Announcement checks our own values when it is built (ValueError): we never announce a record
  that parse_txt would refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import RecordError

#: The mDNS service type every quicraft node announces and browses.
SERVICE_TYPE = "_quicraft._udp.local."
#: The `v` we announce: the version of the discovery record and of the protocols behind it.
PROTOCOL_VERSION = 1
#: RFC 6763 §6.2 advises keeping the TXT record under 1300 bytes so it fits one packet.
MAX_TXT_BYTES = 1300
#: The keys we write, in the order we write them.
TXT_KEYS = ("cluster", "id", "name", "v", "formed", "cid")

#: Cluster and node names: as transport.identity accepts them.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Node ids are key fingerprints (transport.pki.node_id_of: 16 lowercase hex digits); longer
#: fingerprints are accepted so that the id may grow without breaking discovery.
_NODE_ID = re.compile(r"[0-9a-f]{16,64}")
#: Cluster ids are made by the node layer when a cluster forms: lowercase hex, 8 to 64 digits.
_CLUSTER_ID = re.compile(r"[0-9a-f]{8,64}")
_VERSION = re.compile(r"[1-9][0-9]{0,2}")
_FLAG = re.compile(r"[01]")
_KEY_BYTES = frozenset(range(0x20, 0x7F)) - {ord("=")}


@dataclass(frozen=True, slots=True)
class Announcement:
    """What one node says about itself in its TXT record (plus its port, in the SRV record)."""

    cluster: str
    #: The node's identity: the fingerprint of its public key.
    node_id: str
    #: A name for people; not unique, not trusted.
    name: str
    port: int
    #: The id of the formed cluster this node belongs to; None until it belongs to one.
    cluster_id: str | None = None
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _check(_NAME, self.cluster, "cluster name")
        _check(_NODE_ID, self.node_id, "node id")
        _check(_NAME, self.name, "node name")
        if self.cluster_id is not None:
            _check(_CLUSTER_ID, self.cluster_id, "cluster id")
        if not 0 < self.port < 65536:
            raise ValueError(f"bad port {self.port}: expected 1 to 65535")
        if not 0 < self.version < 1000:
            raise ValueError(f"bad protocol version {self.version}")

    @property
    def formed(self) -> bool:
        return self.cluster_id is not None

    def txt(self) -> dict[str, str]:
        """The TXT record as key-value pairs, in TXT_KEYS order (`cid` only when formed)."""
        pairs = {
            "cluster": self.cluster,
            "id": self.node_id,
            "name": self.name,
            "v": str(self.version),
            "formed": "1" if self.formed else "0",
        }
        if self.cluster_id is not None:
            pairs["cid"] = self.cluster_id
        return pairs


def encode_txt(pairs: dict[str, str]) -> bytes:
    """RFC 6763 wire form of `pairs`; ValueError if a pair cannot be written."""
    out = bytearray()
    for key, value in pairs.items():
        item = f"{key}={value}".encode()
        if not key or not set(key.encode()) <= _KEY_BYTES:
            raise ValueError(f"bad TXT key {key!r}")
        if len(item) > 255:
            raise ValueError(f"TXT entry {key!r} is {len(item)} bytes; at most 255 fit")
        out += bytes((len(item),)) + item
    if len(out) > MAX_TXT_BYTES:
        raise ValueError(f"TXT record of {len(out)} bytes; at most {MAX_TXT_BYTES}")
    return bytes(out)


def decode_txt(text: bytes) -> dict[str, bytes | None]:
    """Split a TXT record into {lowercased key: value, or None for a key without `=`}."""
    if len(text) > MAX_TXT_BYTES:
        raise RecordError(f"TXT record of {len(text)} bytes; at most {MAX_TXT_BYTES}")
    pairs: dict[str, bytes | None] = {}
    pos = 0
    while pos < len(text):
        length = text[pos]
        item = text[pos + 1 : pos + 1 + length]
        if len(item) != length:
            raise RecordError(f"TXT string at byte {pos} overruns the record")
        pos += 1 + length
        if not item:
            continue
        raw_key, sep, value = item.partition(b"=")
        if not raw_key or not set(raw_key) <= _KEY_BYTES:
            raise RecordError(f"bad TXT key {raw_key[:32]!r}")
        key = raw_key.decode("ascii").lower()
        if key not in pairs:  # RFC 6763 §6.4: the first occurrence wins
            pairs[key] = value if sep else None
    return pairs


def parse_txt(text: bytes, port: int) -> Announcement:
    """The Announcement in a TXT record (and the SRV port); RecordError if it is not a valid one."""
    pairs = decode_txt(text)

    def field(key: str, pattern: re.Pattern[str], what: str) -> str:
        raw = pairs.get(key)
        if raw is None:
            raise RecordError(f"no {what} ({key}=)" if key not in pairs else f"{key} has no value")
        try:
            value = raw.decode("ascii")
        except UnicodeDecodeError:
            raise RecordError(f"{what} is not ASCII") from None
        if not pattern.fullmatch(value):
            raise RecordError(f"bad {what} {value[:70]!r}")
        return value

    cluster = field("cluster", _NAME, "cluster name")
    node_id = field("id", _NODE_ID, "node id")
    name = field("name", _NAME, "node name")
    version = int(field("v", _VERSION, "protocol version"))
    formed = field("formed", _FLAG, "formed flag") == "1"
    cluster_id = field("cid", _CLUSTER_ID, "cluster id") if formed else None
    if not formed and "cid" in pairs:
        raise RecordError("a cluster id (cid=) on a node that is not formed")
    if not 0 < port < 65536:
        raise RecordError(f"bad port {port}")
    return Announcement(cluster, node_id, name, port, cluster_id, version)


def _check(pattern: re.Pattern[str], value: str, what: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"bad {what} {value!r}")
