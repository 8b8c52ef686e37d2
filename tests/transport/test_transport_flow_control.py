"""Flow control paced by reading, over real QUIC on 127.0.0.1: a peer may send only a window
beyond what our handlers have read, and whatever the frame sizes, everything arrives."""

from __future__ import annotations

import asyncio
import os
import random

from transport_helpers import Certs, eventually, run

from quicraft.transport import ALPN_RAFT, Connection, Stream, connect, serve
from quicraft.transport.stream import receive_windows
from quicraft.wire.frame import HEADER_SIZE

MAX_FRAME = 16 * 1024  # small windows, so that a test fills them in a moment
STREAM_WINDOW, CONNECTION_WINDOW = receive_windows(MAX_FRAME)


class HeldBack:
    """A handler that reads nothing until `release` is set, then reads its stream to the end."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.streams: list[Stream] = []
        self.frames: dict[int, list[bytes]] = {}  # of the streams read to their end

    async def __call__(self, conn: Connection, stream: Stream) -> None:
        self.streams.append(stream)
        await self.release.wait()
        frames = []
        while (frame := await stream.read_frame()) is not None:
            frames.append(frame)
        self.frames[stream.stream_id] = frames

    def held(self) -> int:
        return sum(stream.received - stream.taken for stream in self.streams)


def test_a_handler_that_does_not_read_holds_its_writer_back(certs: Certs) -> None:
    n1, n2 = certs.load("n1"), certs.load("n2")
    handler = HeldBack()
    frames = [os.urandom(MAX_FRAME) for _ in range(40)]
    written = len(frames) * (HEADER_SIZE + MAX_FRAME)

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: handler}, max_frame=MAX_FRAME)
        conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT, max_frame=MAX_FRAME)
        stream = await conn.open_stream()
        for frame in frames:
            stream.write_frame(frame)
        stream.end()
        await eventually(lambda: handler.held() >= STREAM_WINDOW)
        await asyncio.sleep(0.3)  # many round trips: credit would have come by now
        assert handler.held() == STREAM_WINDOW  # what the first window allows, no more
        unacked = conn._protocol.streams.unacked(stream.stream_id)
        assert unacked == written - STREAM_WINDOW
        handler.release.set()
        await asyncio.wait_for(stream.drain(), 10)  # reading frees the writer
        await eventually(lambda: stream.stream_id in handler.frames)
        assert handler.frames[stream.stream_id] == frames
        conn.close()
        server.close()

    run(main())


def test_streams_that_are_not_read_share_one_connection_window(certs: Certs) -> None:
    n1, n2 = certs.load("n1"), certs.load("n2")
    handler = HeldBack()
    sent: list[list[bytes]] = [[os.urandom(MAX_FRAME) for _ in range(3)] for _ in range(6)]

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: handler}, max_frame=MAX_FRAME)
        conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT, max_frame=MAX_FRAME)
        streams = []
        for frames in sent:  # 6 streams of 3 frames: more than each stream's window
            stream = await conn.open_stream()
            for frame in frames:
                stream.write_frame(frame)
            stream.end()
            streams.append(stream)
        await eventually(lambda: len(handler.streams) == len(sent))
        await asyncio.sleep(0.5)  # many round trips: credit would have come by now
        # The connection's window, and beyond it at most an unfinished frame a stream (which
        # more bytes may complete). Their own windows alone would let the streams hold more.
        unfinished = len(sent) * (HEADER_SIZE + MAX_FRAME - 1)
        assert CONNECTION_WINDOW <= handler.held() <= CONNECTION_WINDOW + unfinished
        assert CONNECTION_WINDOW + unfinished < len(sent) * STREAM_WINDOW
        handler.release.set()
        for stream in streams:
            await asyncio.wait_for(stream.drain(), 10)
        await eventually(lambda: len(handler.frames) == len(sent))
        assert [handler.frames[s.stream_id] for s in streams] == sent
        conn.close()
        server.close()

    run(main())


def test_frames_of_every_size_arrive_whole_through_slow_readers(certs: Certs) -> None:
    """Frames at and near the limit, cut anywhere by the windows, on streams read at their
    own pace: none is ever stuck waiting for credit that only its own reading could free."""
    n1, n2 = certs.load("n1"), certs.load("n2")
    rng = random.Random(7)
    sizes = [MAX_FRAME, MAX_FRAME - 1, 0, 1, MAX_FRAME // 2 + 1]
    sent = [
        [rng.randbytes(rng.choice([*sizes, rng.randrange(MAX_FRAME)])) for _ in range(60)]
        for _ in range(4)
    ]
    got: dict[int, list[bytes]] = {}

    async def slow(conn: Connection, stream: Stream) -> None:
        frames = got.setdefault(stream.stream_id, [])
        while (frame := await stream.read_frame()) is not None:
            frames.append(frame)
            if len(frames) % 7 == 0:
                await asyncio.sleep(0.005)
        stream.write_frame(b"done")

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: slow}, max_frame=MAX_FRAME)
        conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT, max_frame=MAX_FRAME)

        async def send(frames: list[bytes]) -> int:
            stream = await conn.open_stream()
            for frame in frames:
                stream.write_frame(frame)
            stream.end()
            await stream.drain()
            assert await stream.read_frame() == b"done"
            return stream.stream_id

        ids = await asyncio.gather(*(send(frames) for frames in sent))
        assert [got[i] for i in ids] == sent
        conn.close()
        server.close()

    run(main(), timeout=60)


def test_streams_we_give_up_do_not_hold_the_connections_window(certs: Certs) -> None:
    """A stream we opened and stop reading part way (an error, a timeout) holds what it
    received unread; aborting it lets it go, and the connection's window with it. Two such
    streams dropped without abort() stall every other stream of the connection."""
    n1, n2 = certs.load("n1"), certs.load("n2")

    async def answer(conn: Connection, stream: Stream) -> None:
        frame = await stream.read_frame()
        for _ in range(200 if frame == b"big" else 0):  # six times the stream's window
            stream.write_frame(bytes(1000))
        stream.write_frame(frame or b"")

    async def main() -> None:
        server = await serve("127.0.0.1", 0, n1, {ALPN_RAFT: answer}, max_frame=MAX_FRAME)
        conn = await connect("127.0.0.1", server.address[1], n2, ALPN_RAFT, max_frame=MAX_FRAME)
        table = conn._protocol.streams
        for _ in range(3):
            stream = await conn.open_stream()
            stream.write_frame(b"big")
            stream.end()
            assert await stream.read_frame() == bytes(1000)
            await eventually(lambda s=stream: s.received >= STREAM_WINDOW)
            stream.abort()
            stream.abort()  # idempotent
            assert stream.stream_id not in table._live  # forgotten: it holds nothing
        echo = await conn.open_stream()
        echo.write_frame(b"echo")
        assert await asyncio.wait_for(echo.read_frame(), 5) == b"echo"
        conn.close()
        server.close()

    run(main())
