"""Host names as certificates and SNI compare them, without cryptography.

Apart from :mod:`edgeway.pki.certificates` (which re-exports them) so that what only compares
names, like the HTTPS redirect listener every gateway imports, does not import cryptography's
x509 (~70 ms of CPU at each start).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = ["covers", "host_name", "uncovered"]


def host_name(name: str) -> str:
    """A host name as certificates and SNI compare it: lower case, no trailing dot; an IP
    address in its canonical form."""
    name = name.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return name


def covers(pattern: str, name: str) -> bool:
    """Whether a certificate name (``api.example.com``, ``*.example.com``, an IP address) covers
    the host ``name`` (already normalised by :func:`host_name`). A wildcard stands for exactly
    one whole left-most label (RFC 6125 §6.4.3): ``*.example.com`` covers ``a.example.com``, not
    ``example.com`` nor ``a.b.example.com``."""
    if pattern == name:
        return True
    if pattern.startswith("*."):
        label, dot, rest = name.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return False


def uncovered(names: Sequence[str], by: Sequence[str]) -> list[str]:
    """The ``names`` (normalised) that none of the certificate names ``by`` covers; a wildcard
    name is covered only by the same wildcard."""
    return [name for name in names if not any(covers(pattern, name) for pattern in by)]
