"""Log records as text (for people) or one JSON object per line (for collectors).

A JSON record carries what ties it to the rest of the telemetry: the node id and term (from
the process's node, see set_log_context), and the trace and span ids of the span that was
current when it was logged, or of the span passed as `extra={"span": span}`.
"""

from __future__ import annotations

import json
import logging
import time
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


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Send the process's logs to standard error in `log_format`."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _utc(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"
