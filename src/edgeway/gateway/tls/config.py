"""Config of HTTPS on the listener (``listen.tls``) and of the plaintext listener that redirects
to it (``listen.http_redirect``).

The certificate, key and CA files are read and checked when the config is validated (by
:mod:`edgeway.pki.certificates`), so ``edgeway config check``, the start and every live reload
refuse a file that cannot be served with the file and the key named, and the gateway serves the
very bytes that were checked (kept on the model, see ``TlsCertificate.loaded``). Paths are
relative to the directory the gateway starts in.

What a live reload may change here: the certificates (and their files' content), the client CA
bundle, HSTS and the redirect's hosts and port. The rest is part of the listening socket or of
every handshake's settings and needs a restart (``Listen.fixed_settings``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.config.base import LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.units import Duration

if TYPE_CHECKING:
    from edgeway.pki.certificates import CaBundle, ServerCertificate

# A host name pattern as certificates and SNI use them: a name, or `*.` and a name (one label).
_HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
HSTS_PRELOAD_MIN_AGE = 31_536_000  # one year: what the browsers' preload lists require


def host_pattern(value: str) -> str:
    """A host name (``api.example.com``), a one-label wildcard (``*.example.com``) or an IP
    address, normalised (lower case, no trailing dot); PydanticCustomError otherwise."""
    name = value.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    if _HOST_PATTERN.fullmatch(name) is None or len(name) > 253:
        raise PydanticCustomError(
            "host_name",
            "'{value}' is not a host name (api.example.com), a wildcard (*.example.com) or an IP address",
            {"value": value},
        )
    return name


def _host_patterns(values: list[str] | None) -> list[str] | None:
    return None if values is None else [host_pattern(v) for v in values]


class TlsCertificate(StrictModel):
    """A certificate chain and its key, served to clients whose SNI names one of its names."""

    cert: str = Field(
        min_length=1,
        description="PEM file: the server's certificate, then each intermediate that issued it, in "
        "order (not the root).",
    )
    key: str = Field(
        min_length=1,
        description="PEM file with the certificate's private key, unencrypted (keep it readable by "
        "the gateway's user only).",
    )
    names: list[str] | None = Field(
        None,
        min_length=1,
        description="Host names this certificate is served for, by the client's SNI "
        "(`*.example.com`: any one label). Default: every DNS name and IP address of its "
        "subjectAltName. Each must be one of those names.",
    )
    _loaded: ServerCertificate | None = PrivateAttr(None)

    @field_validator("names")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        return _host_patterns(value)

    @model_validator(mode="after")
    def _check_files(self) -> TlsCertificate:
        # Imported here: cryptography's X.509 code loads only for a config that serves TLS.
        from edgeway.pki.certificates import CertificateError, load_server_certificate, uncovered

        try:
            loaded = load_server_certificate(self.cert, self.key)
        except CertificateError as exc:
            raise LocatedProblemsError([((exc.role,), str(exc))]) from None
        if self.names is not None:
            missing = set(uncovered(self.names, loaded.names))
            problems: list[tuple[Loc, str]] = [
                (
                    ("names", index),
                    f"'{name}' is not a name of the certificate in '{self.cert}' "
                    f"(it has: {', '.join(loaded.names)})",
                )
                for index, name in enumerate(self.names)
                if name in missing
            ]
            if problems:
                raise LocatedProblemsError(problems)
        self._loaded = loaded
        return self

    @property
    def loaded(self) -> ServerCertificate:
        """The checked certificate chain and key, as read when the config was validated."""
        assert self._loaded is not None, "a validated TlsCertificate has been loaded"
        return self._loaded

    @property
    def served_names(self) -> tuple[str, ...]:
        """The names SNI selects this certificate by."""
        return tuple(self.names) if self.names is not None else self.loaded.names


class ClientCertificates(StrictModel):
    """Client certificates (mutual TLS): which authorities' certificates are accepted, and
    whether a client must present one."""

    ca: str = Field(
        min_length=1,
        description="PEM file of the certificate authorities whose client certificates are accepted.",
    )
    mode: Literal["required", "optional"] = Field(
        "required",
        description="`required`: a client without a valid certificate fails the handshake; "
        "`optional`: it may connect without one (a route's `client_cert` can still require one), "
        "but a certificate it presents must be valid.",
    )
    _bundle: CaBundle | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _check_file(self) -> ClientCertificates:
        from edgeway.pki.certificates import CertificateError, load_ca_bundle

        try:
            self._bundle = load_ca_bundle(self.ca)
        except CertificateError as exc:
            raise LocatedProblemsError([(("ca",), str(exc))]) from None
        return self

    @property
    def bundle(self) -> CaBundle:
        assert self._bundle is not None, "a validated ClientCertificates has been loaded"
        return self._bundle


class Hsts(StrictModel):
    """HTTP Strict Transport Security: browsers use only HTTPS for this host from then on."""

    max_age: Duration = Field(
        31_536_000.0,
        gt=0,
        description="How long browsers remember it (`365d`); start low (`5m`) when enabling it.",
    )
    include_subdomains: bool = Field(False, description="Also every subdomain of the host.")
    preload: bool = Field(
        False,
        description="Ask to be on browsers' built-in HTTPS-only lists (needs `max_age` of a year and "
        "`include_subdomains`; hard to undo).",
    )

    @model_validator(mode="after")
    def _preload_rules(self) -> Hsts:
        if self.preload and (self.max_age < HSTS_PRELOAD_MIN_AGE or not self.include_subdomains):
            raise PydanticCustomError(
                "hsts_preload",
                "preload needs max_age of at least a year (365d) and include_subdomains: true "
                "(the browsers' preload lists refuse anything less)",
            )
        return self

    def header_value(self) -> bytes:
        value = f"max-age={int(self.max_age)}"
        if self.include_subdomains:
            value += "; includeSubDomains"
        if self.preload:
            value += "; preload"
        return value.encode()


class ListenTls(StrictModel):
    """HTTPS on this listener: TLS 1.2 and 1.3 only, forward-secret AEAD ciphers only, no
    compression, no renegotiation; ALPN `http/1.1`; session resumption (tickets and a session
    cache)."""

    certificates: list[TlsCertificate] = Field(
        min_length=1,
        description="Certificates, each chosen by the names the client's SNI asks for. The first is "
        "the default: served when the SNI names none of them, or is absent (clients connecting to "
        "an IP address send none).",
    )
    min_version: Literal["1.2", "1.3"] = Field(
        "1.2", description="Oldest TLS version accepted: `1.2` (with ECDHE+AEAD ciphers only) or `1.3`."
    )
    session_tickets: bool = Field(
        True,
        description="Resume sessions with tickets (a returning client skips the full handshake). Each "
        "process has its own ticket key, made at start and kept across reloads.",
    )
    client_certificates: ClientCertificates | None = Field(
        None,
        description="Ask clients for a certificate (mutual TLS); the verified one is passed to "
        "services as `X-Edgeway-Client-Cert-*` headers.",
    )
    hsts: Hsts | None = Field(
        None, description="Send `Strict-Transport-Security` on every response of this listener."
    )

    @model_validator(mode="after")
    def _one_certificate_per_name(self) -> ListenTls:
        owner: dict[str, int] = {}
        problems: list[tuple[Loc, str]] = []
        for index, cert in enumerate(self.certificates):
            if cert._loaded is None:
                continue  # its own error is reported
            taken = [name for name in cert.served_names if name in owner]
            if taken:
                names = ", ".join(f"'{name}'" for name in taken)
                problems.append(
                    (
                        ("certificates", index, "names" if cert.names is not None else "cert"),
                        f"{names} {'is' if len(taken) == 1 else 'are'} also served by "
                        f"certificates[{owner[taken[0]]}]; each name is served by one certificate "
                        "(list the ones this one serves in 'names')",
                    )
                )
            for name in cert.served_names:
                owner.setdefault(name, index)
        if problems:
            raise LocatedProblemsError(problems)
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Every name a certificate is served for."""
        return tuple(name for cert in self.certificates for name in cert.served_names)

    def material_digest(self) -> str:
        """Changes when the content of a certificate, key or CA file does (a renewed certificate
        under the same file names is a change a reload must apply)."""
        h = hashlib.sha256()
        for cert in self.certificates:
            h.update(cert.loaded.digest.encode())
        if self.client_certificates is not None:
            h.update(self.client_certificates.bundle.digest.encode())
        return h.hexdigest()


class HttpRedirect(StrictModel):
    """A plaintext listener that answers every request with `308 Permanent Redirect` to the same
    host and path on this listener's HTTPS port."""

    host: str | None = Field(None, description="Address to bind; default: `listen.host`.")
    port: int = Field(ge=0, le=65535, description="TCP port to bind (usually 80).")
    https_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port written in the redirect's URL; default: `listen.port` (443 is left out). Set "
        "it when a load balancer or NAT maps the HTTPS port to another one.",
    )
    hosts: list[str] | None = Field(
        None,
        min_length=1,
        description="Host names redirected (`*.example.com`: any one label); a request for another "
        "host gets 421 Misdirected Request, so a forged Host header cannot make the gateway redirect "
        "anywhere. "
        "Default: the names of `listen.tls.certificates`.",
    )

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        return _host_patterns(value)


def tls_files(data: Any) -> list[str]:
    """The certificate, key and CA files a raw (unvalidated) config names under ``listen.tls``
    and each ``services.<name>.tls``, read leniently: what the file watch must watch besides the
    config files, also while the config is invalid (a fixed key file must bring the next reload)."""
    files: list[str] = []
    services = data.get("services") if isinstance(data, dict) else None
    for service in services.values() if isinstance(services, dict) else ():
        upstream = service.get("tls") if isinstance(service, dict) else None
        if isinstance(upstream, dict):
            files += [upstream[k] for k in ("ca", "cert", "key") if isinstance(upstream.get(k), str)]
    listen = data.get("listen") if isinstance(data, dict) else None
    tls = listen.get("tls") if isinstance(listen, dict) else None
    if not isinstance(tls, dict):
        return [f.strip() for f in files if f.strip()]
    certificates = tls.get("certificates")
    for entry in certificates if isinstance(certificates, list) else []:
        if isinstance(entry, dict):
            files += [entry[k] for k in ("cert", "key") if isinstance(entry.get(k), str)]
    clients = tls.get("client_certificates")
    if isinstance(clients, dict) and isinstance(clients.get("ca"), str):
        files.append(clients["ca"])
    return [f.strip() for f in files if f.strip()]
