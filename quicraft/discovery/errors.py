"""The errors of discovery.

DiscoveryError    discovery cannot run as asked: an unknown interface, one without an IPv4
                  address, an mDNS name already taken on the LAN
RecordError       (a ValueError) an mDNS record that is not a valid quicraft announcement;
                  raised by the parsers, caught and debug-logged by the browser
"""

from __future__ import annotations


class DiscoveryError(Exception):
    """Discovery cannot run as asked (the message says why, for people)."""


class RecordError(ValueError):
    """An mDNS record that is not a valid quicraft announcement (it came off the wire)."""
