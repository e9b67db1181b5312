"""Run a gateway process: listeners, signals, graceful shutdown, and worker processes.

With ``workers > 1`` the parent starts that many worker processes; each binds the same port with
SO_REUSEPORT and the kernel spreads connections across them. The parent only supervises: it
forwards SIGTERM/SIGINT and exits when every worker has.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
from pathlib import Path

from edgeway.gateway.access_log import AccessLog
from edgeway.gateway.admin import AdminHandler
from edgeway.gateway.config import GatewayConfig, load_config
from edgeway.gateway.runtime import Gateway
from edgeway.http.listener import Listener, bind_socket
from edgeway.http.server import ServerProtocol
from edgeway.observability.logs import setup_logging


async def run(config: GatewayConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set), then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            break
    # Events logged through `logging` (breaker transitions, health verdicts) in the common JSON schema.
    setup_logging(config.name)
    access_log = AccessLog(config.name) if config.access_log.enabled else None
    events = access_log or AccessLog(config.name)
    gateway = Gateway(config, access_log)
    await gateway.start()

    def rejected(conn: ServerProtocol, status: int, reason: str) -> None:
        events.event("warning", "request rejected", client=conn.client, status=status, reason=reason)

    listener = Listener(gateway.handle, gateway.limits, on_reject=rejected)
    await listener.start(bind_socket(config.listen.host, config.listen.port))
    admin: Listener | None = None
    admin_handler = AdminHandler(gateway)
    if config.admin is not None:
        admin = Listener(admin_handler, gateway.limits)
        await admin.start(bind_socket(config.admin.host, config.admin.port))
    events.event(
        "info",
        "gateway listening",
        listen=f"{config.listen.host}:{listener.port}",
        admin=f"{config.admin.host}:{admin.port}" if admin and config.admin else None,
        routes=len(config.routes),
        pid=os.getpid(),
    )
    events.flush()
    await stop.wait()
    grace = float(config.limits.shutdown_grace)
    admin_handler.draining = True
    events.event("info", "gateway draining", grace_s=grace, connections=len(listener.connections))
    forced = await listener.shutdown(grace)
    if admin is not None:
        await admin.shutdown(1.0)
    await gateway.stop()
    events.event("info", "gateway stopped", forced_closes=forced)
    events.flush()


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # Windows, or a platform without wheels: asyncio's loop still works
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve_config(config: GatewayConfig) -> None:
    install_uvloop()
    asyncio.run(run(config))


def _worker(path: str) -> None:
    serve_config(load_config(Path(path)))


def serve(path: Path, workers: int | None = None) -> None:
    """Load, validate and serve `path`; `workers` overrides the config's worker count."""
    config = load_config(path)
    n = workers or config.workers
    if n <= 1:
        serve_config(config)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(path),), name=f"edgeway-worker-{i}") for i in range(n)]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for p in procs:
        p.join()
        code = code or (p.exitcode or 0)
    sys.exit(code)
