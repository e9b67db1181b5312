"""Broker URLs as every setting takes them: one URL, or a NATS cluster as a comma-separated list.

``nats://a:4222, nats://b:4222`` is how a cluster is written in every edgeway setting
(``EDGEWAY_BUS_URL``, ``EDGEWAY_NATS_URL``, the security service's ``bus_url``, the gateway's
revocation push, push source and discovery). nats-py takes a list, not such a string (it answers
``invalid connect url option``), and RabbitMQ clients take one URL: this module is the one place
that turns the setting into what the client needs, so no entry point splits it on its own.

A leaf module (standard library and :mod:`edgeway.bus.errors` only): the discovery layer and the
gateway's config schema import it without pulling in a broker client.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from edgeway.bus.errors import BusConfigError

NATS_SCHEMES = ("nats", "tls")
AMQP_SCHEMES = ("amqp", "amqps")


def safe_url(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def broker_urls(url: str | Sequence[str]) -> list[str]:
    """The URLs of a broker setting: split on commas, stripped, empty entries dropped.

    Every entry needs a scheme and a valid port, and all share one broker kind: several NATS
    servers (``nats://``/``tls://``) form a cluster; RabbitMQ (``amqp://``/``amqps://``) takes
    exactly one URL. Raises :class:`BusConfigError` naming the entry (without its password).
    """
    parts = [url] if isinstance(url, str) else list(url)
    urls = [entry.strip() for part in parts for entry in part.split(",") if entry.strip()]
    if not urls:
        raise BusConfigError("no broker URL: give nats://host:4222 (or a comma-separated list) or amqp://…")
    schemes = {_scheme(entry) for entry in urls}
    if schemes <= set(AMQP_SCHEMES):
        if len(urls) > 1:
            raise BusConfigError(
                f"RabbitMQ takes one broker URL, got {len(urls)}: {', '.join(map(safe_url, urls))}"
            )
    elif not schemes <= set(NATS_SCHEMES):
        raise BusConfigError(
            "broker URLs must all be nats:// / tls:// (a NATS cluster) or one amqp:// / amqps:// URL, "
            f"got {', '.join(map(safe_url, urls))}"
        )
    return urls


def nats_servers(url: str | Sequence[str]) -> list[str]:
    """The NATS server list of a setting (see :func:`broker_urls`); refuses a RabbitMQ URL."""
    urls = broker_urls(url)
    if _scheme(urls[0]) not in NATS_SCHEMES:
        raise BusConfigError(f"not a NATS URL: {safe_url(urls[0])} (use nats://host:4222)")
    return urls


def _scheme(entry: str) -> str:
    try:
        parts = urlsplit(entry)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise BusConfigError(f"invalid broker URL {safe_url(entry)}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in NATS_SCHEMES + AMQP_SCHEMES or not parts.hostname:
        raise BusConfigError(
            f"invalid broker URL {safe_url(entry)}: use nats://host:4222, tls://host:4222 or amqp://host:5672/"
        )
    return scheme
