"""``Service``: a service with its backing services attached: its database, its event bus, the
outbox relay between them, and the verifier of its callers (revocations included).

``create_app`` wires what every service has (health, metrics, logs, traces, identity, config,
flags, registry, clients); a :class:`Service` adds what a service that owns data and speaks on
the bus needs, configured from the same settings (``EDGEWAY_DATABASE_URL``, ``EDGEWAY_BUS_URL``,
``EDGEWAY_JWKS_URL`` ...)::

    metadata = MetaData()
    service = Service("catalog", metadata, channels=[ChannelConfig("catalog")])
    app = service.create_app()

    @app.post("/products")
    async def add(product: NewProduct) -> ...:
        async with service.transaction() as session:   # commits, then wakes the relay
            ...
            await service.outbox.add(session, ProductChanged(...))

    if __name__ == "__main__":
        service.run(app)

What it builds, each only when the service has a use for it:

- ``database`` (:class:`~edgeway.service.database.Database`): with ``metadata``, at
  ``settings.database(name)`` (SQLite in ``data_dir`` unless ``database_url`` says otherwise);
  its tables are created at start and a ``database`` readiness check is registered; SQLite in
  WAL mode with ``sqlite_synchronous``;
- ``bus`` (:class:`~edgeway.bus.bus.EventBus`): with ``channels``, on ``settings.broker()`` under
  ``bus_prefix``, each channel with ``bus_replicas`` replicas;
- ``outbox`` and ``relay``: with both, the transactional outbox in the service's database and the
  relay publishing it (``run_relay``; woken by every :meth:`Service.transaction` that commits);
- ``verifier`` (:class:`~edgeway.service.identity.JwksVerifier`): with ``jwks_url``, checking the
  security service's revocations (its feed polled, and with a bus each revocation pushed over it
  reaching the deny-list in milliseconds);
- ``tracing`` (:class:`~edgeway.observability.tracing.Tracing`): the service's tracer, made here
  so what the service builds before its app (a saga orchestrator: ``tracer=service.tracing.tracer``)
  traces into the same provider as its requests. The bus and the outbox use it: publishing is a
  PRODUCER span, each event handled a CONSUMER span of the publisher's trace
  (:mod:`edgeway.bus.tracing`).

Start-up order (inside the kit's own start-up, so config, flags and the registry are ready):
tables, the bus (subscriptions), the outbox relay, then the service's own ``on_startup`` hooks.
Shutdown runs the other way; the kit closes the verifier after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from edgeway.bus.brokers import transport_for
from edgeway.bus.bus import EventBus
from edgeway.bus.outbox import Outbox, OutboxRelay
from edgeway.bus.transport import ChannelConfig
from edgeway.observability.logs import setup_logging
from edgeway.observability.tracing import Tracing
from edgeway.security.revocation import REVOCATIONS, RevocationSubscriber
from edgeway.service.app import ServiceKit, create_app, kit_of
from edgeway.service.database import Database
from edgeway.service.http import HeadOnlyHttpTools
from edgeway.service.identity import JwksVerifier, TokenVerifier
from edgeway.service.settings import ServiceSettings
from edgeway.service.tls import uvicorn_tls_options

__all__ = ["Service", "quiet_libraries", "serve", "service_of"]

Hook = Callable[[], Awaitable[None]]
S = TypeVar("S", bound="Service")


class Service:
    """One service's backing services and app; see the module docstring.

    Subclass it to hold the service's own state (``settings`` may be a subclass of
    :class:`ServiceSettings` with the service's own fields), or use it as it is.
    """

    def __init__(
        self,
        name: str,
        metadata: MetaData | None = None,
        settings: ServiceSettings | None = None,
        *,
        channels: Sequence[ChannelConfig] | None = None,
        verifier: TokenVerifier | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.name = name
        self.settings = settings if settings is not None else ServiceSettings.load()
        self.tracing = tracing if tracing is not None else Tracing(name)
        tracer = self.tracing.tracer
        s = self.settings
        self._db: Database | None = None
        if metadata is not None:
            self._db = Database(s.database(name), metadata, sqlite_synchronous=s.sqlite_synchronous)
        self._bus: EventBus | None = None
        if channels is not None:
            replicated = [dataclasses.replace(c, replicas=s.bus_replicas) for c in channels]
            self._bus = EventBus(transport_for(s.broker(), s.bus_prefix), channels=replicated, tracer=tracer)
        self._outbox: Outbox | None = None
        self._relay: OutboxRelay | None = None
        if self._db is not None and self._bus is not None:
            self._outbox = Outbox(self._db.metadata, tracer=tracer)
            self._relay = OutboxRelay(self._outbox, self._db.sessions, self._bus, idle_interval=0.5)
        self.verifier = verifier if verifier is not None else JwksVerifier.from_settings(s)
        if isinstance(self.verifier, JwksVerifier) and self._bus is not None:
            # Revocations pushed over the bus reach the deny-list in milliseconds; the feed the
            # verifier polls stays as the catch-up for what was published while we were away.
            # The channel follows bus_replicas like the service's own: on a cluster a one-replica
            # stream lives on one node, and pulls on it fail while that node is down.
            RevocationSubscriber(
                self._bus,
                self.verifier.revocations,
                group=f"{name}-revocations",
                channel=dataclasses.replace(REVOCATIONS, replicas=s.bus_replicas),
            )
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._app: FastAPI | None = None

    @property
    def kit(self) -> ServiceKit:
        if self._app is None:
            raise RuntimeError(f"{self.name}: create_app() first")
        return kit_of(self._app)

    @property
    def db(self) -> Database:
        """The database (of a service built with ``metadata``)."""
        if self._db is None:
            raise RuntimeError(f"{self.name} has no database: pass metadata to Service")
        return self._db

    @property
    def bus(self) -> EventBus:
        """The event bus (of a service built with ``channels``)."""
        if self._bus is None:
            raise RuntimeError(f"{self.name} has no event bus: pass channels to Service")
        return self._bus

    @property
    def outbox(self) -> Outbox:
        """The outbox (of a service built with ``metadata`` and ``channels``)."""
        if self._outbox is None:
            raise RuntimeError(f"{self.name} has no outbox: pass metadata and channels to Service")
        return self._outbox

    @property
    def relay(self) -> OutboxRelay:
        """The relay publishing :attr:`outbox`."""
        if self._relay is None:
            raise RuntimeError(f"{self.name} has no outbox relay: pass metadata and channels to Service")
        return self._relay

    def on_startup(self, hook: Hook) -> Hook:
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        self._shutdown.append(hook)
        return hook

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction; after a successful commit the outbox relay is woken."""
        async with self.db.sessions() as session:
            async with session.begin():
                yield session
            if self._relay is not None:
                self._relay.wake()

    def create_app(self, **kwargs: Any) -> FastAPI:
        """The service's app: :func:`~edgeway.service.create_app` (its keyword arguments pass
        through) with the backing services started and stopped in its lifespan."""

        @contextlib.asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            async with contextlib.AsyncExitStack() as stack:
                if self._db is not None:
                    await self._db.create()
                    stack.push_async_callback(self._db.dispose)
                if self._bus is not None:
                    await self._bus.start()
                    stack.push_async_callback(self._bus.stop)
                if self._relay is not None and self.settings.run_relay:
                    self._relay.start()
                    stack.push_async_callback(self._relay.stop)
                for hook in self._startup:
                    await hook()
                for hook in self._shutdown:
                    stack.push_async_callback(hook)
                yield

        if kwargs.get("tracing", self.tracing) is not self.tracing:
            raise TypeError(
                f"{self.name}: pass tracing= to Service(...), not to create_app: "
                "its bus, outbox and sagas use it too"
            )
        kwargs["tracing"] = self.tracing
        checks = dict(kwargs.pop("checks", None) or {})
        if self._db is not None:
            checks.setdefault("database", self._db.ping)
        app = create_app(
            self.name,
            settings=self.settings,
            lifespan=lifespan,
            verifier=self.verifier,
            checks=checks,
            **kwargs,
        )
        app.state.service = self
        self._app = app
        return app

    def run(self, app: FastAPI) -> None:
        """Serve ``app`` on ``settings.host``:``settings.port`` until SIGTERM/SIGINT; over HTTPS
        with ``tls_cert`` (and client certificates with ``tls_client_ca``, see
        :mod:`edgeway.service.tls`)."""
        setup_logging(self.name, self.settings.log_level)  # httpx kept quiet there
        uvicorn.run(
            app,
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            http=HeadOnlyHttpTools,
            **uvicorn_tls_options(self.settings),
        )


def service_of(request: Request, kind: type[S]) -> S:
    """The :class:`Service` behind ``request``'s app (for a FastAPI dependency)."""
    found = getattr(request.app.state, "service", None)
    if not isinstance(found, kind):
        raise TypeError(f"this app was not made by {kind.__name__}.create_app")
    return found


def quiet_libraries() -> None:
    """httpx logs every request at INFO (a revocation feed polls every second): keep warnings.

    :func:`~edgeway.observability.logs.setup_logging` does this now (unless the level is debug);
    kept for callers of the kit that call it after their own logging set-up."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def serve(factory: Callable[[], FastAPI]) -> None:
    """Build the app with ``factory`` and serve it (the body of a service's ``__main__``)."""
    app = factory()
    service = getattr(app.state, "service", None)
    if not isinstance(service, Service):
        raise TypeError(f"{factory.__qualname__} did not build its app with Service.create_app")
    service.run(app)
