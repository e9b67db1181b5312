"""Config of the gateway process: where it listens (``listen``, with HTTPS in
:mod:`edgeway.gateway.tls.config`), its admin API (``admin``), the downstream limits (``limits``) and live
reload (``reload``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from edgeway.gateway.config.base import LocatedProblemsError, StrictModel
from edgeway.gateway.config.units import ByteSize, Duration
from edgeway.gateway.tls.config import HttpRedirect, ListenTls

# What a live reload may change under `listen` (see tls.config): everything else is the socket
# or every handshake's settings.
RELOADABLE_LISTEN_KEYS = (
    ("tls", "certificates"),
    ("tls", "client_certificates", "ca"),
    ("tls", "hsts"),
    ("http_redirect", "https_port"),
    ("http_redirect", "hosts"),
)


class Listen(StrictModel):
    """Where clients connect: plaintext HTTP, or HTTPS with `tls` (and then, optionally, a second
    plaintext listener that redirects to it)."""

    host: str = Field("127.0.0.1", description="Address to bind; `0.0.0.0` for every IPv4 interface.")
    port: int = Field(
        8080,
        ge=0,
        le=65535,
        description="TCP port to bind; `0` takes a free port, reported in the `gateway listening` "
        "log line (one worker only).",
    )
    tls: ListenTls | None = Field(
        None, description="Serve HTTPS on this port (certificates, client certificates, HSTS)."
    )
    http_redirect: HttpRedirect | None = Field(
        None,
        description="A plaintext listener answering every request with a redirect to HTTPS here "
        "(needs `tls`).",
    )
    http2: bool = Field(
        False,
        description="Serve HTTP/2 too: ALPN offers `h2` before `http/1.1` with `tls`; a plaintext "
        "listener takes h2c from clients with prior knowledge (the HTTP/2 preface). Every route works "
        "the same over both; limits in `limits.http2`.",
    )

    @model_validator(mode="after")
    def _redirect_needs_tls(self) -> Listen:
        redirect = self.http_redirect
        if redirect is None:
            return self
        if self.tls is None:
            raise LocatedProblemsError(
                [(("http_redirect",), "a redirect to HTTPS needs 'tls' on this listener")]
            )
        if redirect.port == self.port != 0 and (redirect.host or self.host) == self.host:
            raise LocatedProblemsError(
                [(("http_redirect", "port"), f"port {redirect.port} is the HTTPS listener's own port")]
            )
        return self

    @property
    def redirect_host(self) -> str:
        """Where the redirect listener binds."""
        assert self.http_redirect is not None
        return self.http_redirect.host or self.host

    def fixed_settings(self) -> dict[str, Any]:
        """The settings a live reload cannot change (``RELOADABLE_LISTEN_KEYS`` left out)."""
        dumped: dict[str, Any] = self.model_dump(mode="json")
        for path in RELOADABLE_LISTEN_KEYS:
            node: Any = dumped
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(path[-1], None)
        return dumped

    def material_digest(self) -> str | None:
        """Changes with the content of the certificate, key and CA files (None without TLS)."""
        return self.tls.material_digest() if self.tls is not None else None


class AdminListen(StrictModel):
    """Where the admin API (`/healthz`, `/readyz`, `/routes`, `/metrics`, `POST /reload`...) binds,
    and who may use it (see docs/gateway.md, "Admin API")."""

    host: str = Field(
        "127.0.0.1",
        description="Address to bind; keep it private. Beyond loopback the gateway needs a token "
        "(`token_file` or `EDGEWAY_ADMIN_TOKEN`) and warns at start.",
    )
    port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="TCP port to bind; `0` takes a free port, reported in the `gateway listening` "
        "log line (one worker only).",
    )
    token_file: str | None = Field(
        None,
        description="File holding the bearer token every admin endpoint but `/healthz` and `/readyz` "
        "requires. Unset: the `EDGEWAY_ADMIN_TOKEN` environment variable; with neither, a loopback "
        "admin API generates a token at start and writes it to `<runtime dir>/admin-<port>.token`.",
    )
    hosts: list[str] = Field(
        default_factory=list,
        description="Host names the admin API answers to besides IP addresses and `localhost` (any "
        "other Host is refused with 421, against DNS rebinding).",
    )
    tls: ListenTls | None = Field(
        None,
        description="Serve the admin API over HTTPS, with the settings of `listen.tls`. With "
        "`client_certificates` (`mode: required`) only clients holding a certificate from that CA "
        "complete the handshake (mutual TLS); they still need the token. `hsts` does not apply here.",
    )

    @model_validator(mode="after")
    def _no_hsts(self) -> AdminListen:
        # The admin API is called by tools, not browsers: a header telling browsers to pin HTTPS
        # would be silently ignored here, so it is refused rather than accepted and dropped.
        if self.tls is not None and self.tls.hsts is not None:
            raise LocatedProblemsError(
                [
                    (
                        ("tls", "hsts"),
                        "the admin API sends no HSTS header (tools call it, not browsers): remove it",
                    )
                ]
            )
        return self


class Http2Limits(StrictModel):
    """Limits of a downstream HTTP/2 connection (with `listen.http2`). The request limits above
    (headers, body, timeouts) apply to every stream as to an HTTP/1.1 request. Each budget is
    counted per connection over `budget_window`; past one the client gets GOAWAY
    ENHANCE_YOUR_CALM and the connection is closed."""

    max_concurrent_streams: int = Field(
        128, gt=0, le=65535, description="Streams a client may have open at once; more are refused."
    )
    initial_window: ByteSize = Field(
        64 * 1024,
        ge=16 * 1024,
        le=2**31 - 1,
        description="Receive window of each stream: request body bytes a client may send ahead of the "
        "route reading them, given back as the route reads.",
    )
    connection_body_buffer: ByteSize = Field(
        1024 * 1024,
        ge=65535,
        le=2**31 - 1,
        description="Request body bytes one connection may hold unread across all its streams: the "
        "connection's receive window, given back only as bodies are read, so many streams with "
        "unfinished uploads hold no more than this. When its streams hold nearly all of it, a proxied "
        "body streams upstream instead of waiting to be buffered whole (`request_buffer_bytes`).",
    )
    stream_write_buffer: ByteSize = Field(
        64 * 1024,
        gt=0,
        description="Response bytes queued per stream before the route waits for the client to open "
        "its window; a window kept shut past `send_timeout` resets the stream.",
    )
    max_resets: int = Field(
        200,
        gt=0,
        description="Streams reset by the client, or refused or reset for it, per window (rapid "
        "reset, CVE-2023-44487).",
    )
    max_pings: int = Field(100, gt=0, description="PING frames per window.")
    max_settings: int = Field(100, gt=0, description="SETTINGS frames per window.")
    max_empty_frames: int = Field(200, gt=0, description="DATA frames without data per window.")
    budget_window: Duration = Field(10.0, gt=0, description="The window the budgets are counted over.")


class Limits(StrictModel):
    """Downstream (client side) limits; each names the status answered when it is exceeded."""

    max_header_bytes: ByteSize = Field(
        16 * 1024, gt=0, description="All request header lines together; 431 when exceeded."
    )
    max_headers: int = Field(100, gt=0, description="Number of request header fields; 431 when exceeded.")
    max_url_bytes: ByteSize = Field(8 * 1024, gt=0, description="Request-target length; 414 when exceeded.")
    max_body_bytes: ByteSize | None = Field(
        10 * 1024 * 1024,
        description="Request body size; 413 when exceeded. `null` means unlimited (always streamed).",
    )
    header_read_timeout: Duration = Field(
        10.0, gt=0, description="Time for a client to send a complete request head; 408 after it."
    )
    body_read_timeout: Duration = Field(
        30.0,
        gt=0,
        description="Time a client may send nothing while its request body is being read; 408 after it "
        "(or the response is cut if it has started), and the connection closes.",
    )
    request_buffer_bytes: ByteSize = Field(
        256 * 1024,
        ge=0,
        description="A proxied request body up to this size is read whole before an upstream connection "
        "is taken, so a slow client holds none; a larger body streams once this much has arrived. "
        "`0` streams every body at once.",
    )
    keepalive_timeout: Duration = Field(
        75.0, gt=0, description="An idle keep-alive client connection is closed after this."
    )
    send_timeout: Duration = Field(
        60.0,
        gt=0,
        description="Time a response write may wait for a client that stopped reading (its socket "
        "buffer full); then the connection is aborted and the upstream connection behind a proxied "
        "response is closed (nginx's `send_timeout`).",
    )
    shutdown_grace: Duration = Field(
        30.0, ge=0, description="On SIGTERM, in-flight requests get this long to finish."
    )
    http2: Http2Limits = Field(
        default_factory=Http2Limits, description="HTTP/2 connections (with `listen.http2`)."
    )


class ReloadSettings(StrictModel):
    """Live reload of this config: file watch, SIGHUP, admin `POST /reload`. `listen`, `admin`,
    `workers` and `limits` need a restart; a reload that changes them is refused."""

    watch: bool = Field(
        True,
        description="Poll the config file (and the files it includes) and reload when their content changes.",
    )
    interval: Duration = Field(2.0, gt=0, description="How often the files are polled.")
    drain_timeout: Duration = Field(
        30.0,
        ge=0,
        description="After a reload, requests still running on the old config get this long "
        "before its components (JWKS client, discovery...) are stopped.",
    )
