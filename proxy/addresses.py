"""What counts as a loopback address: the one rule behind allow_insecure_loopback and
the plain-http issuer exception."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (an IPv6 zone suffix is ignored)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
