"""The HTTP/1.1 exchanges of the service kit's clients, on the gateway's own upstream engine.

:class:`PeerHttp` keeps one :class:`~edgeway.http.pool.ConnectionPool` per peer instance
(``scheme://host:port``) and sends one request on a pooled connection: the same asyncio
protocol (httptools), pools and TLS contexts the gateway's upstream calls use. It replaced
httpx under :class:`~edgeway.service.clients.ServiceClient`: on one machine, same run, the
engine spent less than a tenth of httpx's CPU per call and less than half of aiohttp's
(docs/service-kit.md, "The client's transport"; ``python -m bench kit-client``).

One exchange, :meth:`PeerHttp.send`:

- a pooled idle connection is taken (or one is opened, TLS handshake included, within the
  connect timeout: 2 s, as the gateway's, or the call's timeout when shorter); the request goes
  out in one write with ``content-length`` framing;
- the response head must arrive within the timeout after the write, and the body within the
  timeout after the head; a body larger than ``max_body`` is refused, never truncated;
- a pooled connection the peer closed as it was picked is retried once on a fresh connection:
  any request that could not even be written, an idempotent one when nothing came back;
- every failure is an :class:`~edgeway.http.errors.UpstreamError` naming the instance:
  :class:`~edgeway.http.errors.UpstreamConnectError` (and its TLS subclass) when nothing was
  sent, else a reset, a timeout or a protocol error.

What the caller gets back is a :class:`PeerResponse`: status, headers, the whole body, with the
few conveniences callers used on httpx's response (``json()``, ``text``, ``raise_for_status()``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator, Mapping
from email.message import Message
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import orjson

from edgeway.http.errors import UpstreamConnectError, UpstreamError, UpstreamReset, UpstreamTimeout
from edgeway.http.limits import PoolLimits
from edgeway.http.pool import ConnectionPool
from edgeway.http.upstream import UpstreamConnection
from edgeway.http.upstream_tls import default_client_context
from edgeway.resilience.retry import IDEMPOTENT_METHODS
from edgeway.service.errors import PeerResponseError

__all__ = ["DEFAULT_MAX_BODY", "PeerHeaders", "PeerHttp", "PeerResponse", "ResponseBodyTooLarge"]

DEFAULT_MAX_BODY: Final = 64 * 1024 * 1024
_IDEMPOTENT: Final = IDEMPOTENT_METHODS  # bytes, as the gateway sends them
_WITH_BODY: Final = frozenset({b"POST", b"PUT", b"PATCH"})

# Like the gateway's pools: no cap on open connections (a call that finds no idle one opens
# one, so calls to a slow peer are not queued behind a cap), a bounded number kept idle. Idle
# ones go after 4 s: uvicorn, which serves kit services, closes a connection idle for 5 s, and a
# connection picked as the peer closes it is a failed call.
# The gateway's default connect timeout (gateway/upstream/config.py, Timeouts.connect).
DEFAULT_CONNECT_TIMEOUT: Final = 2.0
KIT_POOL_LIMITS: Final = PoolLimits(max_connections=None, max_idle=256, idle_timeout=4.0)


class ResponseBodyTooLarge(UpstreamError):
    """The peer's answer was larger than the client accepts (``max_body``)."""


class PeerHeaders(Mapping[str, str]):
    """A response's headers: case-insensitive, the first value per name; every value with
    :meth:`get_list`."""

    __slots__ = ("_decoded", "raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        self._decoded: dict[str, str] | None = None  # decoded on first use: most callers never look

    @property
    def _first(self) -> dict[str, str]:
        first = self._decoded
        if first is None:
            first = {}
            for name, value in self.raw:
                first.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
            self._decoded = first
        return first

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def get_list(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [v.decode("latin-1") for n, v in self.raw if n.lower() == wanted]

    def __repr__(self) -> str:
        return f"PeerHeaders({self._first!r})"


class PeerResponse:
    """A peer's complete answer."""

    __slots__ = ("content", "headers", "instance", "method", "path", "service", "status_code")

    def __init__(
        self,
        status_code: int,
        headers: PeerHeaders,
        content: bytes,
        *,
        service: str,
        instance: str,
        method: str,
        path: str,
    ) -> None:
        self.service = service
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.instance = instance  # the scheme://host:port that answered
        self.method = method
        self.path = path

    def __repr__(self) -> str:
        return (
            f"<PeerResponse {self.status_code} {self.method} {self.service}{self.path} from {self.instance}>"
        )

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    @property
    def text(self) -> str:
        charset = "utf-8"
        content_type = self.headers.get("content-type")
        if content_type:
            message = Message()
            message["content-type"] = content_type
            charset = message.get_content_charset() or "utf-8"
        try:
            return self.content.decode(charset, "replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return orjson.loads(self.content)

    def raise_for_status(self) -> PeerResponse:
        """Itself when the status is below 400; else :class:`~edgeway.service.errors.PeerResponseError`
        with the status and the body."""
        if self.status_code >= 400:
            raise PeerResponseError(self.service, self.status_code, self.text)
        return self

    async def aclose(self) -> None:
        """Nothing to release (the body was read whole); kept for callers written for httpx."""


def encode_body(json: Any, content: bytes | str | None) -> tuple[bytes | None, str | None]:
    """The request body and its content type from a call's ``json=`` or ``content=``."""
    if json is not None and content is not None:
        raise TypeError("pass json= or content=, not both")
    if json is not None:
        return orjson.dumps(json), "application/json"
    if isinstance(content, str):
        return content.encode(), None
    return content, None


def with_params(target: str, params: Mapping[str, Any] | None) -> str:
    """``target`` with ``params`` appended to its query (httpx's spelling of values: True is
    ``true``, None is empty, a list repeats the name)."""
    if not params:
        return target
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        for one in value if isinstance(value, list | tuple) else (value,):
            pairs.append((name, _param(one)))
    return target + ("&" if "?" in target else "?") + urlencode(pairs)


def _param(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    return str(value)


class _Instance:
    __slots__ = ("authority", "label", "pool")

    def __init__(self, url: str, tls: ssl.SSLContext | None, limits: PoolLimits) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a peer instance is an http:// or https:// URL with a host, got {url!r}")
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        host = parts.hostname
        self.label = url
        default = (secure and port == 443) or (not secure and port == 80)
        bracketed = f"[{host}]" if ":" in host else host
        self.authority = (bracketed if default else f"{bracketed}:{port}").encode("idna")
        context = (tls if tls is not None else default_client_context()) if secure else None
        self.pool = ConnectionPool(host, port, limits, tls=context, server_hostname=host)


class PeerHttp:
    """Connection pools to peer instances; see the module docstring. One per process (the kit
    shares it between its clients); :meth:`aclose` closes every pool."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        limits: PoolLimits = KIT_POOL_LIMITS,
        max_body: int = DEFAULT_MAX_BODY,
        user_agent: str = "edgeway-kit",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        # The context of https:// peers: a CA bundle and a client certificate
        # (edgeway.service.tls.client_tls_context); None: the system's CAs.
        self.tls = tls
        if connect_timeout <= 0:
            raise ValueError(f"a connect timeout is a number of seconds above 0, got {connect_timeout}")
        self.connect_timeout = connect_timeout
        self.limits = limits
        self.max_body = max_body
        self._user_agent = b"user-agent: " + user_agent.encode() + b"\r\n"
        self._instances: dict[str, _Instance] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<PeerHttp {len(self._instances)} instance(s)>"

    def _instance(self, url: str) -> _Instance:
        found = self._instances.get(url)
        if found is None:
            if self._closed:
                raise RuntimeError("the kit's HTTP client is closed")
            found = self._instances[url] = _Instance(url, self.tls, self.limits)
        return found

    async def send(
        self,
        method: str,
        url: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One exchange with the instance at ``url`` (``scheme://host:port``): ``target`` is the
        path and query, already checked and encoded; ``headers`` lower-case names, checked.
        Returns the status, the raw headers and the whole body."""
        instance = self._instance(url)
        verb = method.encode("ascii")
        lines = [verb, b" ", target.encode("ascii"), b" HTTP/1.1\r\nhost: ", instance.authority, b"\r\n"]
        for name, value in headers.items():
            lines += (name.encode("ascii"), b": ", value.encode("utf-8"), b"\r\n")
        if "user-agent" not in headers:
            lines.append(self._user_agent)
        if body is not None:
            lines.append(b"content-length: %d\r\n\r\n" % len(body))
            lines.append(body)
        else:
            lines.append(b"content-length: 0\r\n\r\n" if verb in _WITH_BODY else b"\r\n")
        request = b"".join(lines)
        head_request = verb == b"HEAD"
        pool = instance.pool
        # Opening a connection gets at most connect_timeout of the call's timeout: an instance cut
        # off the network drops the SYN, and the client should move on to another one (nothing
        # was sent) within a second or two, not after the whole timeout.
        connect = min(timeout, self.connect_timeout)
        conn, reused = await pool.acquire(connect)
        try:
            answer = await self._exchange(conn, request, head_request, timeout)
        except UpstreamReset:
            # The peer closed the pooled connection as we picked it: the request never got
            # there when it could not even be written, and an idempotent one may go again
            # when nothing came back.
            stale = reused and not conn.got_bytes and (not conn.request_sent or verb in _IDEMPOTENT)
            pool.release(conn)
            if not stale:
                raise
            conn, _ = await pool.acquire(connect, fresh=True)
            try:
                return await self._exchange(conn, request, head_request, timeout)
            finally:
                pool.release(conn)
        except BaseException:
            pool.release(conn)
            raise
        pool.release(conn)
        return answer

    async def _exchange(
        self, conn: UpstreamConnection, request: bytes, head_request: bool, timeout: float
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        conn.begin(head_request=head_request)
        conn.write(request)
        conn.request_sent = True
        loop = asyncio.get_running_loop()
        conn.set_deadline(loop.time() + timeout, "read", timeout)
        try:
            head = await conn.read_head()
            declared = head.content_length
            if declared is not None and declared > self.max_body:
                conn.abort()
                raise ResponseBodyTooLarge(
                    f"{conn.instance} declared a {declared}-byte answer; the client accepts {self.max_body}",
                    instance=conn.instance,
                )
            body = conn.body
            if body.complete:
                data = body.read_nowait()
                if len(data) > self.max_body:
                    raise self._too_large(conn)
            else:
                conn.set_deadline(loop.time() + timeout, "read", timeout)
                parts = [body.read_nowait()]
                size = len(parts[0])
                while size <= self.max_body and (chunk := await body.read()):
                    size += len(chunk)
                    parts.append(chunk)
                if size > self.max_body:
                    raise self._too_large(conn)
                data = b"".join(parts)
        finally:
            conn.clear_deadline()
        return head.status, head.headers, data

    def _too_large(self, conn: UpstreamConnection) -> ResponseBodyTooLarge:
        conn.abort()  # mid-response, or not to be trusted: never pooled again
        return ResponseBodyTooLarge(
            f"{conn.instance} answered more than the {self.max_body} bytes the client accepts",
            instance=conn.instance,
        )

    async def aclose(self) -> None:
        self._closed = True
        instances, self._instances = self._instances, {}
        for instance in instances.values():
            instance.pool.close()


def nothing_sent(exc: UpstreamError) -> bool:
    """Whether the request cannot have reached the peer (the connection was never up)."""
    return isinstance(exc, UpstreamConnectError) or (
        isinstance(exc, UpstreamTimeout) and exc.phase == "connect"
    )
