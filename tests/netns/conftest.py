"""Fixtures of the LAN tests; the machinery lives in netns_harness.py."""

from netns_harness import lan_factory

__all__ = ["lan_factory"]
