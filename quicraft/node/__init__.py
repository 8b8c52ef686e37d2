"""The asyncio runtime of a quicraft node and its assembly with storage and transport."""

from .forming import FoundingError
from .removal import RemovedFromCluster
from .runtime import NodeError, NodeStopped, ProposalLost, RaftNode, RequestTimeout
from .server import Node
from .settings import PRESETS, NodeSettings, Timings

__all__ = [
    "PRESETS",
    "FoundingError",
    "Node",
    "NodeError",
    "NodeSettings",
    "NodeStopped",
    "ProposalLost",
    "RaftNode",
    "RemovedFromCluster",
    "RequestTimeout",
    "Timings",
]
