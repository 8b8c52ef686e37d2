"""The `quicraft-events/1` service: one subscription per stream, fed from the EventJournal.

Rules of this file:
- The subscriber opens a stream and sends one subscribe frame (wire/events.py), then keeps its
  side open: ending it (or any further frame, a bad_request) ends the subscription. A
  subscribe frame that does not come within SUBSCRIBE_TIMEOUT_S, or does not decode, ends
  the stream with bad_request; a since older than the journal holds, with compacted.
- Then: every held event after since that the subscription wants, then live ones, in
  position order, each once, with a progress frame after each long run of unwanted ones
  (and to a live subscription, where it starts).
  Frames are encoded once per event and shared by subscribers.
- Backpressure: after each batch the stream is drained (little enough unacknowledged). While
  it waits the subscriber is `blocked`, and the journal cuts it off (slow_subscriber) if it
  falls too far behind or the ring drops what it has not sent: the wait is cancelled, the
  end frame written. Memory per subscriber is a cursor and one batch (events.BATCH_BYTES).
- close() (the node is stopping) ends every subscription with shutting_down and gives the
  end frames a moment to leave.
- Traced: the subscribe is a server span, child of the frame's "tp", that ends once the
  subscription is registered (or refused); the hours of events after it are not traced.
"""

from __future__ import annotations

import asyncio
import logging

from opentelemetry.trace import Span, StatusCode

from quicraft.telemetry import NO_TRACING
from quicraft.transport import Connection, Role, Stream, TransportError
from quicraft.wire import (
    EventStreamEnd,
    ProtocolError,
    Subscription,
    decode_subscribe,
    encode_end,
    encode_progress,
)

from .events import EventJournal, Subscriber

log = logging.getLogger("quicraft.events")

SUBSCRIBE_TIMEOUT_S = 10.0
END_TIMEOUT_S = 2.0  # how long an end frame may take to be acknowledged
MAX_MESSAGE = 1000
ROLES = frozenset({Role.ADMIN, Role.CLIENT, Role.READER})


class EventService:
    def __init__(self, journal: EventJournal) -> None:
        self.journal = journal
        self.tracing = NO_TRACING
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def subscribers(self) -> int:
        """Subscriptions being served now."""
        return self._active

    async def handle_stream(self, conn: Connection, stream: Stream) -> None:
        self._active += 1
        self._idle.clear()
        try:
            await self._subscription(conn, stream)
        except (TransportError, ConnectionError) as err:
            log.debug("event stream from %s ended: %s", conn.peer.name, err)
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def close(self, timeout: float = END_TIMEOUT_S) -> None:
        """End every subscription (shutting_down); wait a little for the end frames to go."""
        self.journal.close()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.info("%d event streams did not end in time", self._active)

    # -- one subscription ---------------------------------------------------------------------

    async def _subscription(self, conn: Connection, stream: Stream) -> None:
        if conn.peer.role not in ROLES:
            await _finish(stream, EventStreamEnd("forbidden", "events need role reader or up"))
            return
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                frame = await stream.read_frame()
        except TimeoutError:
            await _finish(stream, EventStreamEnd("bad_request", "no subscribe frame in time"))
            return
        if frame is None:
            return
        try:
            subscription = decode_subscribe(frame)
        except ProtocolError as err:
            await _finish(stream, EventStreamEnd("bad_request", str(err)[:MAX_MESSAGE]))
            return
        span = self.tracing.server_span("quicraft.events", "subscribe", subscription.traceparent)
        opened = self.journal.subscribe(subscription)
        if span is not None:
            _describe(span, subscription, opened)
        if isinstance(opened, EventStreamEnd):
            await _finish(stream, opened)
            return
        log.debug("%s subscribed: %s", conn.peer.name, subscription)
        try:
            await self._serve(stream, opened)
        finally:
            self.journal.unsubscribe(opened)

    async def _serve(self, stream: Stream, sub: Subscriber) -> None:
        # The subscriber's side: anything on it (a frame, its end, a reset) ends the stream.
        watcher = asyncio.ensure_future(stream.read_frame())
        watcher.add_done_callback(lambda done: _wake_on(done, sub))
        journal = self.journal
        try:
            while sub.end is None and not watcher.done():
                batch = journal.read(sub)
                for record in batch:
                    try:
                        stream.write_frame(journal.frame(record))
                    except ProtocolError:  # a bug in what was recorded: say so, go on
                        log.exception("cannot encode event %s", record.event)
                passed_to = journal.progress(sub)
                if passed_to is not None:
                    stream.write_frame(encode_progress(passed_to))
                if batch or passed_to is not None:
                    await _drain(stream, sub)
                    continue
                if journal.has_more(sub):
                    await asyncio.sleep(0)  # a long run of unwanted events: let others work
                    continue
                sub.wake.clear()
                if sub.end is None and not watcher.done() and not journal.has_more(sub):
                    await sub.wake.wait()
            if sub.end is not None:
                await _finish(stream, sub.end)
            elif _sent_more(watcher):
                await _finish(stream, EventStreamEnd("bad_request", "one subscribe per stream"))
        finally:
            watcher.cancel()


def _describe(span: Span, subscription: Subscription, opened: Subscriber | EventStreamEnd) -> None:
    """End the span of a subscribe: what was asked for, and whether it was refused."""
    kinds = subscription.kinds
    span.set_attribute("events.kinds", sorted(kinds) if kinds is not None else ["*"])
    if subscription.prefix is not None:
        span.set_attribute("events.prefix", subscription.prefix)
    if subscription.since is not None:
        span.set_attribute("events.since", subscription.since)
    if isinstance(opened, EventStreamEnd):
        span.set_status(StatusCode.ERROR, f"{opened.code}: {opened.message}")
    span.end()


async def _drain(stream: Stream, sub: Subscriber) -> None:
    """stream.drain(), given up if the journal cuts `sub` off meanwhile."""
    drain = asyncio.ensure_future(stream.drain())
    sub.blocked = True
    sub.on_end = lambda: _cancel(drain)
    try:
        await drain
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    finally:
        sub.blocked = False
        sub.on_end = None


def _cancel(future: asyncio.Future[None]) -> None:
    future.cancel()


async def _finish(stream: Stream, end: EventStreamEnd) -> None:
    """Write the end frame and end our side."""
    message = end.message[:MAX_MESSAGE]
    stream.write_frame(encode_end(end.code, message, end.oldest))
    stream.end()
    try:
        async with asyncio.timeout(END_TIMEOUT_S):
            await stream.drain()
    except TimeoutError:
        log.debug("an event stream's end frame was not acknowledged in time")


def _wake_on(watcher: asyncio.Future[bytes | None], sub: Subscriber) -> None:
    if not watcher.cancelled():
        watcher.exception()  # retrieved: a reset or a lost connection is no error here
    sub.wake.set()


def _sent_more(watcher: asyncio.Future[bytes | None]) -> bool:
    """True if the subscriber sent another frame (not its end, not a reset)."""
    return not watcher.cancelled() and watcher.exception() is None and watcher.result() is not None
