"""Fixtures for the real-process tests; the machinery lives in cluster_harness.py."""

from cluster_harness import cluster

__all__ = ["cluster"]
