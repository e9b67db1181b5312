"""Process-level tuning a long-running edgeway process applies once it has started.

The service kit calls :func:`freeze_heap` at the end of start-up (``ServiceSettings.gc_freeze``);
a process that runs only a bus (a worker without FastAPI) calls it after ``await bus.start()``.
"""

from __future__ import annotations

import gc


def freeze_heap() -> None:
    """Collect once, then ``gc.freeze()`` what survived.

    The start-up heap (modules, routes, pydantic models, pools: a few hundred thousand objects in
    a FastAPI + SQLAlchemy service) is never garbage, yet every full collection walks all of it
    while the event loop waits. Frozen, collections walk only what was allocated since. Measured
    in docs/benchmarks.md (event bus): a consumer's CPU per event and the pause of a full
    collection in a service built with ``create_app``.
    """
    gc.collect()
    gc.freeze()
