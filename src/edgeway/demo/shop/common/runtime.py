"""``ShopService``: one shop service's database, bus, outbox relay, caller verifier and app.

Every service is written the same way::

    service = ShopService("catalog", metadata)
    app = service.create_app()

    @app.get("/products")
    async def products() -> ...:
        async with service.transaction() as session:   # commits, then wakes the relay
            ...
            await service.outbox.add(session, PriceChanged(...))

    if __name__ == "__main__":
        service.run(app)

Start-up order (inside the kit's own start-up, so config, flags and the registry are ready):
tables, the verifier's JWKS and revocation feed, the bus (subscriptions), the outbox relay, then
the service's own ``on_startup`` hooks. Shutdown runs the other way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from edgeway.bus.brokers import transport_for
from edgeway.bus.bus import EventBus
from edgeway.bus.outbox import Outbox, OutboxRelay
from edgeway.demo.shop.common.database import Database
from edgeway.demo.shop.common.events import CHANNELS
from edgeway.demo.shop.common.identity import RevocationAwareVerifier
from edgeway.demo.shop.common.settings import ShopSettings
from edgeway.observability.logs import setup_logging
from edgeway.security.revocation import RevocationSubscriber
from edgeway.service import ServiceKit, create_app, kit_of
from edgeway.service.http import HeadOnlyHttpTools

__all__ = ["ShopService", "quiet_libraries", "serve", "service_of"]

Hook = Callable[[], Awaitable[None]]
S = TypeVar("S", bound="ShopService")


def service_of(request: Request, kind: type[S]) -> S:
    """The service object behind ``request``'s app (for a FastAPI dependency)."""
    found = getattr(request.app.state, "shop", None)
    if not isinstance(found, kind):
        raise TypeError(f"this app was not made by {kind.__name__}.create_app")
    return found


class ShopService:
    def __init__(self, name: str, metadata: MetaData, settings: ShopSettings | None = None) -> None:
        self.name = name
        self.settings = settings if settings is not None else ShopSettings.load()
        self.db = Database(self.settings.database(name), metadata)
        self.outbox = Outbox(metadata)
        channels = [dataclasses.replace(c, replicas=self.settings.bus_replicas) for c in CHANNELS]
        transport = transport_for(self.settings.broker(), self.settings.bus_prefix)
        self.bus = EventBus(transport, channels=channels)
        self.relay = OutboxRelay(self.outbox, self.db.sessions, self.bus, idle_interval=0.5)
        self.verifier = self._verifier()
        if self.verifier is not None:
            # Revocations pushed over the bus reach the deny-list in milliseconds; the feed the
            # verifier polls stays as the catch-up for what was published while we were away.
            RevocationSubscriber(self.bus, self.verifier.revocations, group=f"{name}-revocations")
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._app: FastAPI | None = None

    def _verifier(self) -> RevocationAwareVerifier | None:
        s = self.settings
        if not s.jwks_url:
            return None
        return RevocationAwareVerifier(
            s.jwks_url,
            issuer=s.token_issuer or "edgeway-security",
            audience=s.token_audience or "edgeway",
            revocations_url=f"{s.security_url.rstrip('/')}/revocations" if s.security_url else None,
            poll_interval=s.revocation_poll,
        )

    @property
    def kit(self) -> ServiceKit:
        if self._app is None:
            raise RuntimeError(f"{self.name}: create_app() first")
        return kit_of(self._app)

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
            self.relay.wake()

    def create_app(self, **fastapi_kwargs: Any) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            await self.db.create()
            async with contextlib.AsyncExitStack() as stack:
                stack.push_async_callback(self.db.dispose)
                if self.verifier is not None:
                    await self.verifier.start()
                    stack.push_async_callback(self.verifier.stop)
                await self.bus.start()
                stack.push_async_callback(self.bus.stop)
                if self.settings.run_relay:
                    self.relay.start()
                    stack.push_async_callback(self.relay.stop)
                for hook in self._startup:
                    await hook()
                for hook in self._shutdown:
                    stack.push_async_callback(hook)
                yield

        app = create_app(
            self.name,
            settings=self.settings,
            lifespan=lifespan,
            verifier=self.verifier,
            checks={"database": self.db.ping},
            **fastapi_kwargs,
        )
        app.state.shop = self
        self._app = app
        return app

    def run(self, app: FastAPI) -> None:
        """Serve ``app`` on the configured address until SIGTERM/SIGINT."""
        setup_logging(self.name, self.settings.log_level)
        quiet_libraries()
        uvicorn.run(
            app,
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            http=HeadOnlyHttpTools,
        )


def quiet_libraries() -> None:
    """httpx logs every request at INFO (the revocation feed polls every second): keep warnings."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def serve(factory: Callable[[], FastAPI]) -> None:
    """Build the app with ``factory`` and serve it (the body of each service's ``__main__``)."""
    app = factory()
    service = getattr(app.state, "shop", None)
    if not isinstance(service, ShopService):
        raise TypeError(f"{factory.__qualname__} did not build its app with ShopService.create_app")
    service.run(app)
