"""TLS to upstream instances: the client context a pool connects with, and what a failed
handshake means in words a 502 can carry.

The engine takes an :class:`ssl.SSLContext` and a server name per pool (:class:`ConnectionPool`
``tls=``, ``server_hostname=``); whoever configures the pool builds the context here. Its
defaults are the safe ones: the peer's certificate is verified (against the system's CAs or a
given bundle) and must name the host asked for, TLS 1.2 at least, no renegotiation, and ALPN
offers ``http/1.1`` only (a service that also offers h2 answers in HTTP/1.1), or ``h2`` only for
a service the gateway reaches over HTTP/2 (``alpn=("h2",)``, :mod:`edgeway.http.h2_pool`).
"""

from __future__ import annotations

import ssl
from typing import Final

__all__ = ["client_context", "default_client_context", "describe_tls_error"]

# OpenSSL reasons (ssl.SSLError.reason) that say the peer refused our side of the handshake,
# each with what it means for the operator.
_REFUSED: Final = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the instance requires a client certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the instance refused the handshake (no common protocol or cipher, "
    "or it wants a client certificate)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the instance refused the client certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the instance refused the client certificate: it has expired",
    "TLSV1_ALERT_UNKNOWN_CA": "the instance does not trust the CA of the client certificate",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the instance does not speak the minimum TLS version",
    "UNSUPPORTED_PROTOCOL": "the instance does not speak the minimum TLS version",
    "WRONG_VERSION_NUMBER": "the instance does not speak TLS on this port (plaintext HTTP?)",
    "RECORD_LAYER_FAILURE": "the instance does not speak TLS on this port (plaintext HTTP?)",
    "HTTP_REQUEST": "the instance does not speak TLS on this port (plaintext HTTP?)",
}


def client_context(
    *,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    verify: bool = True,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    alpn: tuple[str, ...] = ("http/1.1",),
) -> ssl.SSLContext:
    """A client context for upstream connections.

    ``ca``: a PEM bundle of the CAs to trust instead of the system's. ``cert`` and ``key``: the
    client certificate (chain, PEM) and its key presented to a service that asks for one (mTLS);
    ``key`` may be left out when ``cert`` holds it too. ``verify=False`` encrypts without
    checking who answers (a test bench, never production). ``minimum``: TLS 1.2 or 1.3 (nothing
    older is offered). ``alpn``: the protocols offered, ``("h2",)`` for HTTP/2. Raises
    :class:`OSError` for a file that cannot be read and :class:`ssl.SSLError` for one that is
    not what it should be (a key that does not match its certificate, no PEM in it).
    """
    if minimum not in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        raise ValueError(f"the minimum TLS version must be 1.2 or 1.3, not {minimum.name}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname on, CERT_REQUIRED
    ctx.minimum_version = minimum
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    if verify:
        if ca is not None:
            ctx.load_verify_locations(cafile=ca)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def describe_tls_error(exc: BaseException) -> str:
    """Why a handshake failed, in one line: ``certificate verify failed: hostname mismatch,
    certificate is not valid for 'orders.internal'``, ``the instance does not speak TLS on this
    port (plaintext HTTP?)``..."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = (exc.verify_message or "").strip().rstrip(".")
        if not message:
            return "certificate verify failed"
        if message[1:2].islower():  # "Hostname mismatch" reads on as "hostname mismatch"; "IP" stays
            message = message[:1].lower() + message[1:]
        return f"certificate verify failed: {message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        known = _REFUSED.get(reason)
        words = reason.lower().replace("_", " ") if reason else str(exc)
        return f"{known} ({words})" if known else words
    if isinstance(exc, ConnectionError | EOFError):
        return (
            "the connection was closed during the handshake (does the instance serve TLS on this "
            "port, and does it accept the client certificate, if it wants one?)"
        )
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


_defaults: dict[tuple[str, ...], ssl.SSLContext] = {}


def default_client_context(alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    """One shared :func:`client_context` with the defaults (system CAs) per ALPN offer, made on
    first use: an ``https://`` instance of a service that configures nothing about TLS."""
    context = _defaults.get(alpn)
    if context is None:
        context = _defaults[alpn] = client_context(alpn=alpn)
    return context
