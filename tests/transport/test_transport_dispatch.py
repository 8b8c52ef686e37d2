"""StreamTable holds the writes of a loop turn and gives them to aioquic once per stream, and
remembers the streams the peer opened in little memory (SeenStreams)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aioquic.quic import events
from hypothesis import given
from hypothesis import strategies as st
from transport_helpers import run

from quicraft.transport import Stream, TransportError
from quicraft.transport.dispatch import SeenStreams, StreamTable


class FakeQuic:
    """Records what the table gives aioquic; refuses the streams in `refused`, as aioquic
    does once a stream is finished or reset."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes, bool]] = []
        self.refused: set[int] = set()
        self._streams: dict[int, Any] = {}
        self._next_id = 0

    def get_next_available_stream_id(self) -> int:
        return self._next_id

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        if stream_id in self.refused:
            raise RuntimeError("Cannot send data after the stream was reset")
        if stream_id == self._next_id:
            self._next_id += 4
        self.sent.append((stream_id, data, end_stream))


def _table(quic: FakeQuic) -> StreamTable:
    return StreamTable(
        cast(Any, quic), dialer=True, max_frame=1 << 20, transmit=lambda: None, failure=lambda: None
    )


def test_the_frames_of_one_turn_reach_aioquic_in_one_call_per_stream() -> None:
    async def main() -> None:
        quic = FakeQuic()
        table = _table(quic)
        first, second = table.open(), table.open()
        quic.sent.clear()  # opening claims each id with an empty write
        for payload in (b"a", b"bb", b"ccc"):
            first.write_frame(payload)
        second.write_frame(b"x")
        first.end()
        assert quic.sent == []  # held until the connection transmits
        table.flush()
        by_stream = {stream_id: (data, end) for stream_id, data, end in quic.sent}
        assert len(quic.sent) == 2
        data, end = by_stream[first.stream_id]
        assert end is True
        assert data == b"\x00\x00\x00\x01a\x00\x00\x00\x02bb\x00\x00\x00\x03ccc"
        assert by_stream[second.stream_id] == (b"\x00\x00\x00\x01x", False)
        table.flush()
        assert len(quic.sent) == 2  # nothing is given twice

    run(main())


def test_a_stream_aioquic_refuses_at_flush_fails_its_next_write() -> None:
    async def main() -> None:
        quic = FakeQuic()
        table = _table(quic)
        stream = table.open()
        stream.write_frame(b"lost")
        quic.refused.add(stream.stream_id)
        table.flush()
        with pytest.raises(TransportError, match="cannot write"):
            stream.write_frame(b"next")

    run(main())


def test_held_bytes_count_as_unacknowledged() -> None:
    async def main() -> None:
        quic = FakeQuic()
        table = _table(quic)
        stream = table.open()
        stream.write_frame(b"abc")
        stream.write_frame(b"de")
        assert table.unacked(stream.stream_id) == 4 + 3 + 4 + 2
        table.flush()
        assert table.unacked(stream.stream_id) == 0  # the fake keeps no aioquic stream state

    run(main())


@given(st.permutations(range(64)), st.integers(0, 64))
def test_seen_streams_are_the_ids_added_in_any_order(ids: list[int], added: int) -> None:
    seen = SeenStreams()
    for stream_id in ids[:added]:
        seen.add(stream_id)
        seen.add(stream_id)  # again: nothing changes
    assert [i for i in range(80) if i in seen] == sorted(ids[:added])
    if added == 64:  # every id of every type below 64: all below the floors
        assert len(seen) == 0


def test_a_peer_stream_started_once_however_many_came_before() -> None:
    """1,000 streams the peer opened and finished: late data for any of them starts no
    handler, and the table keeps no id of them one by one."""

    async def main() -> None:
        table = StreamTable(
            cast(Any, FakeQuic()),
            dialer=False,
            max_frame=1 << 20,
            transmit=lambda: None,
            failure=lambda: None,
        )
        served: list[int] = []

        async def handler(_: object, stream: Stream) -> None:
            served.append(stream.stream_id)
            await stream.read_frame()

        table.handler, table.connection = handler, cast(Any, object())
        frame = b"\x00\x00\x00\x01x"
        for stream_id in range(0, 4000, 4):
            table.dispatch(events.StreamDataReceived(frame, True, stream_id))
        while len(served) < 1000 or table._tasks:
            await asyncio.sleep(0)
        for stream_id in (0, 1996, 3996):
            table.dispatch(events.StreamDataReceived(frame, True, stream_id))
        await asyncio.sleep(0)
        assert served == list(range(0, 4000, 4))
        assert len(table._seen) == 0

    run(main())
