"""Which build runs: its release and the formats it keeps. Nodes talk only with nodes of the
same wire protocol, and open only data of their storage format (docs/operations.md,
"Upgrading"), so `quicraft --version` and every node's first log line say both."""

from __future__ import annotations

import importlib.metadata

from quicraft.storage import FORMAT_VERSION
from quicraft.wire import VERSION as WIRE_VERSION


def release() -> str:
    try:
        return importlib.metadata.version("quicraft")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was not installed
        return "(not installed)"


def build_text() -> str:
    """Such as "quicraft 0.1.0 (wire protocol 1, storage format 1)"."""
    return f"quicraft {release()} (wire protocol {WIRE_VERSION}, storage format {FORMAT_VERSION})"
