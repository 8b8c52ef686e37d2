"""Mutations of valid CBOR at the level of its bytes, for the fuzz tests.

test_wire_fuzz's structural mutations change decoded values and encode them again, so what they
make is always well-formed CBOR as cbor2 writes it. These work on the encoding itself, so they
also reach what cbor2 never writes: lengths that claim more than follows, indefinite lengths,
duplicate map keys, non-minimal heads, invalid UTF-8, tags and simple values, deep nesting, and
an item of one type swapped for another (a bool, a float, a negative int where a uint goes).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field


@dataclass
class Item:
    """One item of an encoding: its head from `start` to `body`, all of it up to `end`."""

    start: int
    body: int
    end: int
    major: int
    arg: int
    children: list[Item] = field(default_factory=list)


def head(major: int, arg: int) -> bytes:
    """The shortest head of `major` with argument `arg` (at most 2**64 - 1)."""
    arg = min(arg, (1 << 64) - 1)
    if arg < 24:
        return bytes([major << 5 | arg])
    for info, size in ((24, 1), (25, 2), (26, 4)):
        if arg < 1 << (8 * size):
            return bytes([major << 5 | info]) + arg.to_bytes(size, "big")
    return bytes([major << 5 | 27]) + arg.to_bytes(8, "big")


def parse(data: bytes, pos: int = 0) -> Item:
    """The item at `pos` of well-formed, definite-length CBOR (as the encoders write it)."""
    initial = data[pos]
    major, info = initial >> 5, initial & 31
    body = pos + 1
    if info < 24:
        arg = info
    else:
        size = 1 << (info - 24)
        arg = int.from_bytes(data[body : body + size], "big")
        body += size
    item = Item(pos, body, body, major, arg)
    if major in (2, 3):
        item.end = body + arg
    elif major in (4, 5, 6):
        count = {4: arg, 5: 2 * arg, 6: 1}[major]
        end = body
        for _ in range(count):
            child = parse(data, end)
            item.children.append(child)
            end = child.end
        item.end = end
    return item


def _items(item: Item) -> list[Item]:
    out = [item]
    for child in item.children:
        out += _items(child)
    return out


#: Items a decoder must refuse or narrow wherever they appear.
ODD_ITEMS: list[bytes] = [
    b"\xf5",  # true
    b"\xf4",  # false
    b"\xf6",  # null
    b"\xf7",  # undefined
    b"\xf0",  # simple value 16
    b"\xf8\x20",  # simple value 32
    b"\xf9\x7e\x00",  # NaN (half)
    b"\xf9\x7c\x00",  # +inf
    b"\xf9\xfc\x00",  # -inf
    b"\xfb" + struct.pack(">d", 1.0),
    b"\x20",  # -1
    b"\x3b" + b"\xff" * 8,  # -2**64
    b"\x1b" + b"\xff" * 8,  # 2**64 - 1
    b"\xc2\x49\x01" + b"\x00" * 8,  # a bignum
    b"\xc1\x00",  # an epoch date
    b"\xd8\x1c\x80",  # a shareable list
    b"\xd8\x1d\x00",  # a shared reference
    b"\x60",
    b"\x40",
    b"\x80",
    b"\xa0",
    b"\x62\xff\xfe",  # text that is not UTF-8
    b"\x63\xed\xa0\x80",  # a UTF-8 encoded surrogate
    b"\x9f\xff",  # indefinite list
    b"\xbf\xff",  # indefinite map
    b"\x5f\x41a\xff",  # indefinite bytes
    b"\x7f\x61a\xff",  # indefinite text
    b"\xff",  # a lone break
    b"\x1c",  # reserved additional information
    b"\x9b\x7f" + b"\xff" * 7,  # a list that claims 2**63 - 1 items
    b"\x5b" + b"\xff" * 8,  # bytes that claim 2**64 - 1 of them
    b"\x19\x00\x01",  # 1, not in its shortest form
    b"\x81" * 1000,  # nested deeper than any message
    b"\xa1\x61k" * 1000,
]


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """`data` with one mutation, chosen by `rng`."""
    action = rng.randrange(11)
    if not data:
        return rng.choice(ODD_ITEMS)
    if action == 0:
        return _flip(data, rng)
    if action == 1:  # cut short
        return data[: rng.randrange(len(data))]
    if action == 2:  # trailing bytes
        return data + rng.choice([rng.randbytes(rng.randint(1, 8)), rng.choice(ODD_ITEMS), data])
    try:
        item = rng.choice(_items(parse(data)))
    except (IndexError, RecursionError):  # not well-formed (a mutation of a mutation)
        return _flip(data, rng)
    before, after = data[: item.start], data[item.end :]
    whole = data[item.start : item.end]
    if action in (3, 4):  # swap for an odd item
        return before + rng.choice(ODD_ITEMS) + after
    if action == 5 and item.major in (2, 3, 4, 5):  # claim a length other than the real one
        arg = rng.choice([item.arg + 1, max(item.arg - 1, 0), 1 << 31, (1 << 63) - 1, 1 << 64])
        return before + head(item.major, arg) + data[item.body :]
    if action == 6 and item.major in (2, 3, 4, 5):  # the same, of indefinite length
        inner = whole if item.major in (2, 3) else data[item.body : item.end]
        return before + bytes([item.major << 5 | 31]) + inner + b"\xff" + after
    if action == 7 and item.major == 5 and item.children:  # a key twice
        pair = data[item.children[0].start : item.children[1].end]
        return before + head(5, item.arg + 1) + pair + data[item.body : item.end] + after
    if action == 8 and item.major == 0:  # a uint as a negative int, bool, float or bignum
        swaps = [
            head(1, item.arg),
            b"\xf5" if item.arg else b"\xf4",
            b"\xfb" + struct.pack(">d", float(item.arg)),
            b"\xc2" + head(2, 8) + item.arg.to_bytes(8, "big"),
        ]
        return before + rng.choice(swaps) + after
    if action == 9 and item.major in (2, 3):  # bytes as text and back, or broken UTF-8
        if item.major == 3 and item.end > item.body and rng.random() < 0.5:
            text = bytearray(whole)
            text[rng.randrange(item.body, item.end) - item.start] = rng.choice([0xFF, 0xC0, 0x80])
            return before + bytes(text) + after
        return before + bytes([(5 - item.major) << 5 | data[item.start] & 31]) + whole[1:] + after
    if action == 10:  # wrap in a tag or in containers
        wrap = rng.choice([head(6, rng.choice([0, 1, 2, 24, 55799])), b"\x81", b"\xa1\x61k"])
        return before + wrap * rng.choice([1, 3, 100]) + whole + after
    return before + data[item.start : item.end] * 2 + after  # repeated: a surplus item
