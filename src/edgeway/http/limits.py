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
