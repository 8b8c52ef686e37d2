"""HOST:PORT strings, as people type them: `10.0.0.2:7400`, `[::1]:7400`, `node1:7400`."""

from __future__ import annotations

import ipaddress

Address = tuple[str, int]


def parse_address(text: str, default_port: int | None = None) -> Address:
    """Parse `HOST:PORT` (IPv6 in brackets); raises ValueError with a message for people."""
    text = text.strip()
    if "://" in text:  # a URL: its scheme's colon would read as an IPv6 address's
        raise ValueError(f"bad address {text!r}: give HOST:PORT, without a scheme such as http://")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}: expected [IPV6]:PORT")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
        elif ":" in host:
            raise ValueError(f"bad address {text!r}: write IPv6 addresses as [ADDR]:PORT")
    if not host:
        raise ValueError(f"bad address {text!r}: no host")
    if not port_text:
        if default_port is None:
            raise ValueError(f"bad address {text!r}: expected HOST:PORT")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad address {text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_unspecified(host: str) -> bool:
    """True for the wildcard addresses 0.0.0.0 and ::, which a server listens on to serve on
    every interface; a dialer must use a real address of that host instead."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8, ::1 and ::ffff:127.x.y.z; False for other names and
    addresses."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
