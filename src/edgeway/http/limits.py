"""Limits and timeouts of the engine, as small frozen config objects named per phase.

Downstream means the client side of the gateway, upstream the service side (Envoy's words).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one downstream connection may send and how long it may take."""

    max_header_bytes: int = 16 * 1024  # request line excluded; 431 beyond
    max_headers: int = 100  # 431 beyond
    max_url_bytes: int = 8 * 1024  # 414 beyond
    max_body_bytes: int | None = 10 * 1024 * 1024  # 413 beyond; None streams without a cap
    header_read_timeout: float = 10.0  # 408 when a request head is not complete in time
    # 408 (or a cut response) when a request body sends nothing for this long while the gateway
    # is reading it: a slow client must not hold a handler (and an upstream connection) forever.
    body_read_timeout: float = 30.0
    keepalive_timeout: float = 75.0  # an idle keep-alive connection is closed after this
    # A response write waits at most this long for a client that stopped reading (its socket
    # buffer full, a zero window); then the connection is aborted, and what the response held
    # (an upstream connection mid-body) is released. nginx's send_timeout.
    send_timeout: float = 60.0
    # Reading pauses when this many body bytes wait for the handler, so a fast client cannot make
    # the gateway hold a large body in memory; it resumes below the low mark.
    read_high_water: int = 256 * 1024
    read_low_water: int = 64 * 1024
    # A client that pipelines more requests than this waits (reading pauses) until the queue drains.
    max_pipelined: int = 32


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    """Per-service upstream timeouts, each answered with 504 when it expires."""

    connect: float = 2.0
    first_byte: float = 15.0  # from the end of the request to the response head
    total: float = 30.0  # the whole exchange, body included


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Per upstream instance connection pool."""

    # Open connections (busy + idle). None: no cap, like nginx, a request that finds no idle
    # connection opens one; a cap bounds concurrency at cap / latency (256 connections to a 50 ms
    # service: 5k req/s, whatever the load), so it is for a service that must be protected.
    # Requests beyond a cap wait in arrival order (FIFO) up to the connect timeout.
    max_connections: int | None = None
    # Idle connections kept for reuse; one released when this many are idle is closed, so a burst
    # does not leave thousands of idle sockets behind (nginx's upstream `keepalive`). Below the
    # concurrency a service sees, connections churn: with 1,000 requests in flight to a 50 ms
    # service, 256 made the gateway open 3,200 connections in 8 s (and spend 15 % more CPU per
    # request) where a limit above the concurrency opened 693 in all.
    max_idle: int = 1024
    idle_timeout: float = 60.0  # idle pooled connections are closed after this
    # Upstream response bytes buffered before reading from the upstream pauses; a slow client
    # therefore slows the upstream down instead of growing gateway memory.
    read_high_water: int = 256 * 1024
    read_low_water: int = 64 * 1024
    # A response head (status line, fields, and any 1xx interim heads before it) larger than
    # this, or with more fields, is a 502: httptools joins a field's pieces as they arrive, so
    # an unbounded head cost quadratic copying on the event loop, stalling every client. Envoy's
    # defaults (60 KiB, 100 fields); nginx refuses a head past its 4-8 KiB proxy buffer.
    max_response_head_bytes: int = 64 * 1024
    max_response_headers: int = 100
    # HTTP/2 keepalive (a `protocol: h2` service): a connection silent for the interval sends a
    # PING, and is aborted when nothing answers within the timeout. None: no PINGs.
    h2_ping_interval: float | None = None
    h2_ping_timeout: float = 20.0


@dataclass(frozen=True, slots=True)
class Http2Limits:
    """What one downstream HTTP/2 connection may do: its streams, windows and abuse budgets.

    The request limits of :class:`ServerLimits` (header sizes and counts, body size, timeouts)
    apply to each stream as they apply to an HTTP/1.1 request.
    """

    # Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); one more is
    # refused with REFUSED_STREAM, also before the client acknowledged the setting.
    max_concurrent_streams: int = 128
    # The receive window of each stream: request body bytes a client may send ahead of the
    # handler reading them. It is given back only as the handler reads (or a proxy's request
    # buffer grows it, within the connection's budget below).
    initial_window_bytes: int = 64 * 1024
    # Request body bytes the connection may hold unread, across its streams: its receive window,
    # given back only as bodies are read (or dropped). Without it, 128 streams each buffering a
    # proxy's 256 KiB made one connection hold 35 MB. When the streams hold nearly all of it, a
    # proxy waiting to buffer a whole small body streams what it has instead.
    connection_body_buffer_bytes: int = 1024 * 1024
    # Response bytes queued per stream before the handler's drain waits (write_paused): what a
    # client that keeps a stream's window shut can make the gateway hold.
    stream_write_buffer: int = 64 * 1024
    # Abuse budgets, each counted over `budget_window` seconds; past one the connection gets
    # GOAWAY ENHANCE_YOUR_CALM and is closed. Resets cover RST_STREAM from the client and the
    # streams the gateway refused or reset for it (CVE-2023-44487 "rapid reset", and its
    # server-triggered variant); pings and settings frames each make the gateway write an ACK.
    max_resets: int = 200
    max_pings: int = 100
    max_settings: int = 100
    # DATA, HEADERS or CONTINUATION frames that carry nothing (CVE-2019-9518).
    max_empty_frames: int = 200
    budget_window: float = 10.0
