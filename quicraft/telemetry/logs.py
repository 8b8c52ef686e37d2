"""Log records as text (for people) or one JSON object per line (for collectors).

A JSON record carries what ties it to the rest of the telemetry: the node id and term (from
the process's node, see set_log_context), and the trace and span ids of the span that was
current when it was logged, or of the span passed as `extra={"span": span}`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from opentelemetry import trace

from .settings import LogFormat

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The node id and term at the moment of logging, or {} before the node is open.
LogContext = Callable[[], dict[str, object]]

_context: LogContext | None = None


def set_log_context(context: LogContext | None) -> None:
    """Name the process's node in its JSON logs (one node per `quicraft node` process)."""
    global _context
    _context = context


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if _context is not None:
            out.update(_context())
        span = getattr(record, "span", None) or trace.get_current_span()
        ids = span.get_span_context()
        if ids.is_valid:
            out["trace_id"] = f"{ids.trace_id:032x}"
            out["span_id"] = f"{ids.span_id:016x}"
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class RepeatFilter(logging.Filter):
    """Let a line through once a minute, and count its repeats meanwhile: the count goes
    with the next one let through. A node that a peer refuses, or cannot reach, on every
    attempt would otherwise log the same line twice a second for as long as it lasts.

    Lines that differ only in port numbers count as the same (a peer dials from a new port
    each time), and so do OpenTelemetry's lines that differ only in numbers (its exporter
    says "retrying in 0.95s", a new delay each time, while a collector is down). Debug lines
    are never held back: whoever asks for them wants every one.
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        #: line (ports masked) -> (when it was last let through, repeats held back since),
        #: the line let through longest ago first
        self._seen: OrderedDict[tuple[str, int, str], tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()  # the loop's thread, the span exporter's, ... log

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return True
        line = record.getMessage()
        masked = _PORT.sub(":*", line)
        if record.name.startswith("opentelemetry"):
            masked = _NUMBER.sub("#", masked)
        key = (record.name, record.levelno, masked)
        now = self.clock()
        with self._lock:
            shown_at, held = self._seen.get(key, (-math.inf, 0))
            if now - shown_at < self.window_s:
                self._seen[key] = (shown_at, held + 1)
                return False
            self._seen[key] = (now, 0)
            self._seen.move_to_end(key)
            # Lines that all differ (from many addresses, say) would otherwise pile up for a
            # window, each new one costing a pass over them all: forget the oldest instead.
            while len(self._seen) > _MAX_LINES_SEEN:
                self._seen.popitem(last=False)
        if held:
            since = f"{now - shown_at:.0f} s"
            record.msg, record.args = f"{line} (and {held} more like it in the last {since})", None
        return True


_PORT = re.compile(r"(?<=[0-9\]]):[0-9]{1,5}\b")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")
_MAX_LINES_SEEN = 1000


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Send the process's logs to standard error in `log_format`, repeats held back."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RepeatFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _utc(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"
