"""One NATS connection that fails fast at start-up and reconnects forever afterwards.

nats-py applies the same reconnect settings to the first connection attempt: with unlimited
reconnects ``nats.connect`` never returns while the server is down, so start-up code could not
fall back to a cached config. (``allow_reconnect=False`` does not help: the server-selection loop
retries on its own until ``max_reconnect_attempts`` is exceeded.) So we connect allowing one
quick retry, then switch to unlimited reconnects for the life of the connection; the client
reads these options on every disconnect.

``url`` may list a cluster's servers, comma-separated (:func:`edgeway.bus.urls.nats_servers`).
"""

from __future__ import annotations

import logging
from typing import Any

from nats.aio.client import Client as NatsClient

from edgeway.bus.nats_liveness import LIVENESS, reconnect_forever
from edgeway.bus.urls import nats_servers

__all__ = ["connect"]

_log = logging.getLogger("edgeway.nats")


async def _on_error(exc: Exception) -> None:
    _log.warning("nats: %s", exc or type(exc).__name__)


async def _on_reconnect() -> None:
    _log.info("nats: reconnected")


async def connect(url: str, *, timeout: float = 2.0, name: str | None = None) -> NatsClient:
    """Connect once (raising ``OSError``/``nats.errors.Error`` on failure), then reconnect forever.

    A malformed ``url`` raises :class:`~edgeway.bus.errors.BusConfigError` before any attempt.
    """
    servers = nats_servers(url)
    nc = NatsClient()

    async def on_disconnect() -> None:
        # nats-py calls this on our own close() too (the client is CLOSED by then): only a lost
        # connection is worth a warning, not every clean shutdown of every process.
        if not nc.is_closed:
            _log.warning("nats: disconnected; reconnecting")

    # nats-py annotates these as int but takes seconds as floats (nats.connect passes them on).
    timing: dict[str, Any] = {"connect_timeout": timeout, "reconnect_time_wait": 0.1, **LIVENESS}
    await nc.connect(
        servers,
        name=name,
        allow_reconnect=True,
        max_reconnect_attempts=1,
        error_cb=_on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=_on_reconnect,
        **timing,
    )
    reconnect_forever(nc, 1.0)
    return nc
