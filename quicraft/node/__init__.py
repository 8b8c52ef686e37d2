"""The asyncio runtime of a quicraft node and its assembly with storage and transport."""

from .runtime import NodeError, NodeStopped, ProposalLost, RaftNode, RequestTimeout
from .server import Node
from .settings import PRESETS, NodeSettings, Timings

__all__ = [
    "PRESETS",
    "Node",
    "NodeError",
    "NodeSettings",
    "NodeStopped",
    "ProposalLost",
    "RaftNode",
    "RequestTimeout",
    "Timings",
]
