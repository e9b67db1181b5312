"""Errors of the HTTP engine.

    HttpError                      base of everything raised by edgeway.http
    ├── RequestRejected            a downstream request is refused; carries the status to answer
    │   (400 malformed/smuggling, 408, 413, 414, 431, 501) and closes the connection
    ├── BodyTooLarge               a body grew past its limit while streaming (413)
    ├── ClientDisconnected         the client went away while we were reading or writing
    └── UpstreamError              the upstream could not give a usable response; carries status
        ├── UpstreamConnectError   refused / unreachable / DNS (502)
        │   └── UpstreamTlsError   the TLS handshake failed: certificate not trusted, wrong
        │                          name, expired, not TLS at all, client certificate refused
        ├── UpstreamTimeout        connect, first-byte or total timeout (504); `phase` says which
        ├── UpstreamReset          closed or reset mid-exchange (502)
        ├── UpstreamProtocolError  unparseable response (502)
        ├── PoolTimeout            no pooled connection freed up in time (503)
        └── InstanceDown           its health check marked the instance down while the request
                                   was in flight or queued for it (504); `sent` says whether it
                                   went out

Third-party errors (OSError, httptools parser errors) are mapped to these at the boundary.
"""

from __future__ import annotations


class HttpError(Exception):
    status: int = 500


class RequestRejected(HttpError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class BodyTooLarge(HttpError):
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"body larger than {limit} bytes")
        self.limit = limit


class ClientDisconnected(HttpError):
    status = 499


class SendTimeout(ClientDisconnected):
    """The client read nothing of the response for ``limits.send_timeout`` (nginx's
    ``send_timeout``): its connection is aborted, as if it had gone away."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the client did not read the response for {seconds:g}s (limits.send_timeout)")
        self.seconds = seconds


class UpstreamError(HttpError):
    status = 502

    def __init__(self, message: str, *, instance: str = "") -> None:
        super().__init__(message)
        self.instance = instance


class UpstreamConnectError(UpstreamError):
    status = 502


class UpstreamTlsError(UpstreamConnectError):
    """The TLS handshake with an instance failed (502). A connect failure: the request never
    reached the service, so it may go to another instance whatever its method, and it counts
    against the instance like a refused connection. ``reason`` is the short why
    ("certificate verify failed: hostname mismatch, ...")."""

    status = 502

    def __init__(self, message: str, *, instance: str = "", reason: str = "") -> None:
        super().__init__(message, instance=instance)
        self.reason = reason


class UpstreamTimeout(UpstreamError):
    status = 504

    def __init__(self, phase: str, seconds: float, *, instance: str = "") -> None:
        super().__init__(f"upstream {phase} timeout after {seconds:g}s", instance=instance)
        self.phase = phase


class UpstreamReset(UpstreamError):
    status = 502


class UpstreamProtocolError(UpstreamError):
    status = 502


class PoolTimeout(UpstreamError):
    status = 503


class InstanceDown(UpstreamError):
    status = 504

    def __init__(self, message: str, *, instance: str = "", sent: bool = True) -> None:
        super().__init__(message, instance=instance)
        self.sent = sent
