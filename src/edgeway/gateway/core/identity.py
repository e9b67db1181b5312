"""The verified caller of a request, as the auth filters established it: from a bearer token
(the ``auth`` filter) or from a client certificate (the ``client_cert`` filter, on a listener
with mutual TLS)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    """The verified caller of a request, as the auth filter established it."""

    subject: str
    client_id: str | None
    roles: frozenset[str]
    scopes: frozenset[str]
    claims: Mapping[str, Any]  # every verified claim, for conditions and Python endpoints
    token: str  # the bearer token, passed on to services that verify it again


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The client certificate a mutual TLS connection presented, verified in its handshake
    against the listener's ``client_certificates.ca``."""

    subject: str  # RFC 4514: "CN=partner-a,O=Acme"
    issuer: str  # RFC 4514
    sans: tuple[str, ...]  # subjectAltName entries as "DNS:a.example", "URI:spiffe://...", "email:..."
    sha256: str  # of the certificate (DER), hex: what a service pins

    @property
    def san_values(self) -> frozenset[str]:
        """The subjectAltName values without their type (``a.example``, ``spiffe://...``)."""
        return frozenset(entry.partition(":")[2] for entry in self.sans)

    def as_claims(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "sans": list(self.sans),
            "sha256": self.sha256,
        }

    def identity(self) -> Identity:
        """The caller this certificate vouches for, when no token named one: its subject, with
        the certificate as the ``client_cert`` claim."""
        return Identity(self.subject, None, frozenset(), frozenset(), {"client_cert": self.as_claims()}, "")
