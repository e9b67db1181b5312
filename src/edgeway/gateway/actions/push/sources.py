"""Where push messages come from.

A :class:`PushSource` is started with the hub as its sink and calls ``sink.publish(...)`` for every
message, from the event loop's thread; it never waits for clients (the hub queues per client).
edgeway ships the event-bus source (:mod:`.bus_source`) and :class:`LocalSource`, a source that
Python code holds and publishes into. A source given in config (``push.sources``) is a
``module:attribute`` naming a PushSource, or a factory (class or function) returning one.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Protocol

from edgeway.gateway.actions.push.messages import PushMessage
from edgeway.gateway.core.errors import GatewayError

log = logging.getLogger("edgeway.gateway.actions.push")


class PushSink(Protocol):
    def publish(
        self, topic: str, data: Any, *, event: str = "message", id: str | None = None
    ) -> PushMessage | None:
        """Push ``data`` (JSON bytes, or a value to encode as JSON) to ``topic``'s subscribers."""


class PushSource(Protocol):
    async def start(self, sink: PushSink) -> None: ...

    async def stop(self) -> None: ...


class LocalSource:
    """A source for Python code in the gateway's process (tests, Python endpoints, a background
    task): keep a reference, name it in ``push.sources``, and call :meth:`publish`."""

    def __init__(self) -> None:
        self._sink: PushSink | None = None

    async def start(self, sink: PushSink) -> None:
        self._sink = sink

    async def stop(self) -> None:
        self._sink = None

    def publish(
        self, topic: str, data: Any, *, event: str = "message", id: str | None = None
    ) -> PushMessage | None:
        """Publish now; None when the gateway is not running (or the hub dropped the message)."""
        if self._sink is None:
            log.debug("push: local source not started; dropping a message for %s", topic)
            return None
        return self._sink.publish(topic, data, event=event, id=id)


def import_object(path: str, what: str) -> Any:
    """The object ``module:attribute.sub`` names; GatewayError naming ``what`` if it is not there."""
    module_name, _, attribute = path.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise GatewayError(f"{what} {path!r} cannot be loaded: {exc}") from exc
    return found


def load_source(path: str) -> PushSource:
    found = import_object(path, "push source")
    if not hasattr(found, "start") and callable(found):
        found = found()
    if not (callable(getattr(found, "start", None)) and callable(getattr(found, "stop", None))):
        raise GatewayError(f"push source {path!r} is not a PushSource (it needs start(sink) and stop())")
    source: PushSource = found
    return source
