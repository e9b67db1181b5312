"""Run a gateway process: listeners, signals, live reload, graceful shutdown, worker processes.

With ``workers > 1`` the parent becomes a small supervisor (:mod:`edgeway.gateway.process.supervisor`)
that starts that many worker processes; each binds the same port with SO_REUSEPORT and the kernel
spreads connections across them. The parent only supervises: it forwards SIGTERM/SIGINT/SIGHUP and
exits when every worker has. Each worker reloads on its own:
it watches the config file, takes SIGHUP from the parent, and when its admin API was asked to
reload it signals the parent, which passes the SIGHUP on to the other workers (the sender is
known from the signal's siginfo, so it does not reload twice).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

from edgeway.build import engine_build
from edgeway.gateway.config import GatewayConfig, load_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.errors import ConfigError, ConfigIssue
from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.process.admin import AdminHandler
from edgeway.gateway.process.admin_auth import (
    TOKEN_ENV,
    AdminGuard,
    is_loopback,
    remove_token,
    resolve_token,
    write_token,
)
from edgeway.gateway.process.parent_watch import watch_parent
from edgeway.gateway.process.reload import Reloader, ReloadResult, Trigger
from edgeway.gateway.telemetry.workers import DIR_ENV, WorkerMetrics
from edgeway.gateway.tls.config import ListenTls
from edgeway.gateway.tls.context import TlsSetupError
from edgeway.gateway.tls.hsts import HstsHandler
from edgeway.gateway.tls.redirect import HttpsRedirect
from edgeway.gateway.tls.termination import TlsTermination
from edgeway.http.listener import Listener, bind_socket
from edgeway.http.server import Handler, ServerProtocol
from edgeway.observability.logs import setup_logging
from edgeway.process_tuning import freeze_heap
from edgeway.tasks import cancel_and_wait

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # what the supervisor forwards


class GatewayServer:
    """The serving part of one gateway process: the traffic and admin listeners in front of the
    current :class:`Gateway`, and its :class:`Reloader` when it was loaded from a file."""

    def __init__(
        self,
        config: GatewayConfig,
        path: Path | None = None,
        *,
        sources: list[str] | None = None,
        parent_pid: int | None = None,
    ) -> None:
        self.config = config
        access_log = AccessLog(config.name) if config.access_log.enabled else None
        self.events = access_log or AccessLog(config.name)
        self.gateway = Gateway(config, access_log)
        # HTTPS: the listener's handshake context and its certificates, which reloads swap.
        self.tls = _termination(config.listen.tls, "listen.tls", path, http2=config.listen.http2)
        # HTTPS (and mutual TLS) on the admin port: the same model and contexts, fixed for the
        # life of the process (a change to `admin` needs a restart).
        self.admin_tls = _termination(
            config.admin.tls if config.admin is not None else None, "admin.tls", path
        )
        self.listener = Listener(
            downstream_handler(self.gateway),
            self.gateway.limits,
            on_reject=self._rejected,
            tls=self.tls.context if self.tls is not None else None,
            http2=self.gateway.http2,
        )
        self.redirect: Listener | None = None  # listen.http_redirect, bound in start()
        # The admin token: configured, or generated for a loopback admin API (admin_auth). Raises
        # ConfigError for an admin API beyond loopback without one, before anything binds.
        token, self._token_generated = (
            resolve_token(config.admin) if config.admin is not None else ("", False)
        )
        self.admin_token = token
        self._token_file: Path | None = None
        hosts = config.admin.hosts if config.admin is not None else ()
        self.admin_handler = AdminHandler(self.gateway, AdminGuard(token or _unusable_token(), hosts))
        self.admin: Listener | None = None
        self.reloader: Reloader | None = None
        self.worker_metrics: WorkerMetrics | None = None
        metrics_dir = os.environ.get(DIR_ENV)
        if parent_pid is not None and metrics_dir:
            self.worker_metrics = WorkerMetrics(
                Path(metrics_dir), lambda: self.gateway.env.metrics.exposition()[0]
            )
            self.admin_handler.workers = self.worker_metrics
        self._watch_connections(self.gateway)
        if path is not None:
            announce = None
            if parent_pid is not None:
                pid = parent_pid

                def announce() -> None:
                    os.kill(pid, signal.SIGHUP)

            self.reloader = Reloader(
                path,
                self.gateway,
                install=self._install,
                prepare=self._prepare_listeners,
                events=self.events,
                sources=sources,
                announce=announce,
            )
            self.admin_handler.reloader = self.reloader

    def _rejected(self, conn: ServerProtocol, status: int, reason: str) -> None:
        self.events.event("warning", "request rejected", client=conn.client, status=status, reason=reason)

    def _watch_connections(self, gateway: Gateway) -> None:
        """Open client connections, per listener, and requests in flight, read at scrape time."""
        gateway.env.metrics.gauge(
            "http_server_requests_in_flight", "Requests being served now."
        ).set_function(lambda: float(self.gateway.inflight))
        gauge = gateway.env.metrics.gauge(
            "edgeway_gateway_connections",
            "Client connections open now, by listener (traffic or admin).",
            ("listener",),
        )
        gauge.labels("traffic").set_function(lambda: float(len(self.listener.connections)))
        gauge.labels("admin").set_function(
            lambda: float(len(self.admin.connections)) if self.admin is not None else 0.0
        )

    def _install(self, gateway: Gateway) -> None:
        if gateway.env.metrics is not self.gateway.env.metrics:
            self._watch_connections(gateway)  # a new name: new metrics
        self.gateway = gateway
        self.listener.set_handler(downstream_handler(gateway))
        self.admin_handler.gateway = gateway
        if gateway.access_log is not None:
            self.events = gateway.access_log

    def _prepare_listeners(self, config: GatewayConfig) -> Callable[[], None]:
        """Ready what a reloaded config changes on the listeners (the certificates, the
        redirect's hosts); the function returned puts it in service, with the new gateway.
        TlsSetupError when OpenSSL refuses a certificate: nothing changes then."""
        tls = self.tls
        certificates = None
        if tls is not None and config.listen.tls is not None:
            certificates = tls.prepare(config.listen.tls)
        changed = config.listen.material_digest() != self.config.listen.material_digest()

        def commit() -> None:
            self.config = config
            if tls is not None and certificates is not None:
                tls.use(certificates)
                if changed:
                    self._log_certificates("tls certificates reloaded")
            if self.redirect is not None:
                self.redirect.set_handler(self._redirect_handler(config))

        return commit

    def _redirect_handler(self, config: GatewayConfig) -> HttpsRedirect:
        listen = config.listen
        redirect = listen.http_redirect
        assert redirect is not None
        port = redirect.https_port or listen.port or self.listener.port
        if redirect.hosts is not None:
            return HttpsRedirect.for_hosts(redirect.hosts, port)
        tls = self.tls
        assert tls is not None  # a redirect needs listen.tls (config validation)
        return HttpsRedirect(lambda host: tls.certificates.covers(host), port)

    def _log_certificates(self, message: str) -> None:
        if self.tls is not None:
            self.events.event("info", message, certificates=self.tls.certificates.summary)

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def admin_port(self) -> int | None:
        return self.admin.port if self.admin is not None else None

    async def start(self) -> None:
        config = self.config
        await self.gateway.start()
        await self.listener.start(bind_socket(config.listen.host, config.listen.port))
        redirect = config.listen.http_redirect
        if redirect is not None:
            self.redirect = Listener(
                self._redirect_handler(config), self.gateway.limits, on_reject=self._rejected
            )
            await self.redirect.start(bind_socket(config.listen.redirect_host, redirect.port))
        if config.admin is not None:
            self.admin = Listener(
                self.admin_handler,
                self.gateway.limits,
                tls=self.admin_tls.context if self.admin_tls is not None else None,
            )
            await self.admin.start(bind_socket(config.admin.host, config.admin.port))
            if self._token_generated:
                self._token_file = write_token(self.admin.port, self.admin_token)
            if not is_loopback(config.admin.host):
                self.events.event(
                    "warning",
                    "the admin API listens beyond loopback: keep its port off public networks",
                    admin=f"{config.admin.host}:{self.admin.port}",
                )
        if self.reloader is not None:
            self.reloader.start()
        if self.worker_metrics is not None:
            await self.worker_metrics.start()
        self._log_certificates("tls certificates loaded")
        self.events.event(
            "info",
            "gateway listening",
            listen=f"{config.listen.host}:{self.listener.port}",
            tls=self.tls is not None,
            http_redirect=f"{config.listen.redirect_host}:{self.redirect.port}"
            if self.redirect is not None
            else None,
            admin=f"{config.admin.host}:{self.admin_port}" if config.admin is not None else None,
            admin_tls=self.admin_tls is not None,
            admin_token_file=str(self._token_file) if self._token_file is not None else None,
            routes=len(config.routes),
            engine=engine_build(),
            reload="watch"
            if self.reloader and self.reloader.watcher
            else ("signal" if self.reloader else None),
            pid=os.getpid(),
        )
        self.events.flush()

    async def reload(self, trigger: Trigger = "api") -> ReloadResult | None:
        return await self.reloader.reload(trigger) if self.reloader is not None else None

    def trigger_reload(self) -> None:
        if self.reloader is not None:
            self.reloader.trigger("signal")
        else:
            self.events.event("warning", "SIGHUP ignored: this gateway was not started from a config file")

    async def shutdown(self) -> None:
        """Stop reloading, drain the listeners (``limits.shutdown_grace``), stop the gateway."""
        if self.reloader is not None:
            await self.reloader.stop_watching()
        grace = float(self.gateway.config.limits.shutdown_grace)
        self.admin_handler.draining = True
        self.events.event(
            "info", "gateway draining", grace_s=grace, connections=len(self.listener.connections)
        )
        forced = await self.listener.shutdown(grace)
        if self.redirect is not None:
            await self.redirect.shutdown(1.0)
        if self.admin is not None:
            await self.admin.shutdown(1.0)
        if self.worker_metrics is not None:
            await self.worker_metrics.stop()
        if self._token_file is not None:
            remove_token(self._token_file, self.admin_token)
        if self.reloader is not None:
            await self.reloader.close()
        await self.gateway.stop()
        self.events.event("info", "gateway stopped", forced_closes=forced)
        self.events.flush()


async def run(
    config: GatewayConfig,
    stop: asyncio.Event | None = None,
    *,
    path: Path | None = None,
    sources: list[str] | None = None,
    parent_pid: int | None = None,
    freeze: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set), then shut down gracefully. With `path`,
    the config reloads on SIGHUP, on `POST /reload` and (`reload.watch`) when the file changes."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    server = GatewayServer(config, path, sources=sources, parent_pid=parent_pid)
    handled: list[signal.Signals] = []
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        loop.add_signal_handler(signal.SIGHUP, server.trigger_reload)
        handled.append(signal.SIGHUP)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        pass  # not the main thread (tests), or a platform without these signals
    if parent_pid is not None and len(handled) == len(_FORWARDED):
        # A worker starts with these signals blocked (see serve): what the parent forwarded
        # while it was starting is pending, and is delivered to the handlers now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    await server.start()
    if freeze:
        # A gateway process: its start-up heap (modules, config models, routes) is never garbage;
        # frozen, a full collection no longer walks it while requests wait (edgeway.process_tuning).
        freeze_heap()
    # A worker whose supervisor died (SIGKILL: nothing forwarded) drains and exits as on SIGTERM;
    # on Linux the kernel's death signal (parent_watch.die_with_parent) usually comes first.
    orphan_guard = (
        asyncio.create_task(watch_parent(parent_pid, stop), name="parent-watch")
        if parent_pid is not None
        else None
    )
    try:
        await stop.wait()
        await server.shutdown()
    finally:
        if orphan_guard is not None:
            await cancel_and_wait(orphan_guard)
        for sig in handled:
            loop.remove_signal_handler(sig)


def downstream_handler(gateway: Gateway) -> Handler:
    """What the traffic listener calls: the gateway, behind the HSTS header when the listener
    sends one (only then: a plaintext or HSTS-less listener calls the gateway directly)."""
    tls = gateway.config.listen.tls
    if tls is not None and tls.hsts is not None:
        return HstsHandler(gateway, tls.hsts.header_value())
    return gateway


def _termination(
    tls: ListenTls | None, key: str, path: Path | None, *, http2: bool = False
) -> TlsTermination | None:
    """The TLS side of a listener configured at ``key`` (None for plaintext); a certificate
    OpenSSL refuses is a ConfigError naming ``key``."""
    if tls is None:
        return None
    try:
        return TlsTermination(tls, http2=http2)
    except TlsSetupError as exc:
        raise ConfigError([ConfigIssue(str(path or "<config>"), None, None, key, str(exc))]) from None


def _unusable_token() -> str:
    # No admin API: the handler exists (reload swaps its gateway) but never serves.
    import secrets

    return secrets.token_urlsafe(32)


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # Windows, or a platform without wheels: asyncio's loop still works
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve_config(
    config: GatewayConfig,
    path: Path | None = None,
    *,
    sources: list[str] | None = None,
    parent_pid: int | None = None,
) -> None:
    install_uvloop()
    setup_logging(config.name)  # discovery and reload log through the stdlib, in the JSON schema
    asyncio.run(run(config, path=path, sources=sources, parent_pid=parent_pid, freeze=True))


def serve_worker(path: Path, parent_pid: int) -> None:
    """One worker of a multi-worker gateway (started by :mod:`edgeway.gateway.process.supervisor`)."""
    sources: list[str] = []
    serve_config(load_config(path, sources=sources), path, sources=sources, parent_pid=parent_pid)


def serve(path: Path, workers: int | None = None) -> None:
    """Load, validate and serve `path`; `workers` overrides the config's worker count.

    With several workers this process becomes the supervisor: the config has been validated
    here (so errors are reported before anything starts), then the process replaces itself with
    :mod:`edgeway.gateway.process.supervisor`, a fresh interpreter that imports nothing but the standard
    library. It keeps the pid a service manager knows, and it does not carry the gateway, pydantic
    and the CLI (about 45 MB) for a job that is only forwarding signals.
    """
    sources: list[str] = []
    config = load_config(path, sources=sources)
    n = workers or config.workers
    problems = config.port_zero_problems(n)
    if problems:
        raise ConfigError(
            [ConfigIssue(str(path), None, None, f"{key}.port", message) for key, message in problems]
        )
    if n <= 1:
        serve_config(config, path, sources=sources)
        return
    token_file: Path | None = None
    if config.admin is not None:
        token, fresh = resolve_token(config.admin)
        if fresh:
            # One token for every worker (they share the admin port): generated here, inherited
            # through the environment (exec keeps it), written out once for clients; the
            # supervisor removes the file when the workers have exited.
            os.environ[TOKEN_ENV] = token
            token_file = write_token(config.admin.port, token)
    from edgeway.gateway.process import supervisor

    supervisor.exec_supervisor(path, n, token_file=token_file)
