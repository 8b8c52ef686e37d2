"""Fixtures of the discovery tests: the netns LAN of tests/netns (pytest puts only this folder
on sys.path, so the harness's folder is added here)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "netns"))

from netns_harness import lan_factory

__all__ = ["lan_factory"]
