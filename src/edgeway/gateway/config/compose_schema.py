"""Config of composition at the edge: aggregate endpoints, Python endpoints, push channels and
the response cache.

Owned by the composition work (issue 3); the fields grow here without touching ``schema.py``.
Each action model offers ``service_refs()`` (the services it calls, with their key paths) so the
top-level cross-checks can report unknown services for every action alike.
"""

from __future__ import annotations

from edgeway.gateway.config.base import StrictModel
from edgeway.gateway.config.keypath import Loc


class AggregateAction(StrictModel):
    """Call several services (in parallel where independent) and answer with one response."""

    def service_refs(self) -> list[tuple[Loc, str]]:
        return []


class EndpointAction(StrictModel):
    """Answer with a Python function registered by a module named in `python.modules`."""

    def service_refs(self) -> list[tuple[Loc, str]]:
        return []


class PushAction(StrictModel):
    """A push channel: clients subscribe to topics over WebSocket (or Server-Sent Events)."""

    def service_refs(self) -> list[tuple[Loc, str]]:
        return []


class CacheRule(StrictModel):
    """Cache responses of this route for a time."""


class CacheStore(StrictModel):
    """Where cached responses live: a bounded in-memory LRU, optionally a shared Redis."""


class PythonEndpoints(StrictModel):
    """Modules that register Python endpoints."""


class PushSettings(StrictModel):
    """Where pushed messages come from (the event bus, or a source given in Python)."""
