"""edgeway: the edge and the wiring of a Python microservice system."""

from edgeway._deferred_imports import install as _defer_nats_websocket_imports

__version__ = "0.1.0"

# Before any edgeway module imports nats: its WebSocket transport's aiohttp (~150 ms of CPU at
# every start) is imported only if a ws:// URL is used (edgeway._deferred_imports).
_defer_nats_websocket_imports()
