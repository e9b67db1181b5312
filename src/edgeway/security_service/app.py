"""``create_security_app(settings)``: the security service as a FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI

from edgeway.observability.tracing import Tracing
from edgeway.security.keys import FileKeyStore, load_kek
from edgeway.security_service import admin, auth, db, feeds, oauth
from edgeway.security_service.events import RevocationEvents
from edgeway.security_service.problems import install_token_error_handler
from edgeway.security_service.seed import apply_seed, load_seed
from edgeway.security_service.settings import SecuritySettings
from edgeway.security_service.state import SecurityState
from edgeway.security_service.store import SecurityStore
from edgeway.service.app import create_app
from edgeway.tasks import BackgroundTasks

log = logging.getLogger("edgeway.security_service")

HOUSEKEEPING_INTERVAL = 600.0
# What peers poll every second or few: a line each would be most of the log.
POLLED_PATHS = ("/.well-known/jwks.json", "/.well-known/openid-configuration", "/revocations", "/policies")


def create_security_app(
    settings: SecuritySettings | None = None, *, tracing: Tracing | None = None
) -> FastAPI:
    """The security service's app, built with the service kit's ``create_app``: its problem
    answers, request ids, ``/health/live``, ``/health/ready``, ``/metrics`` and access log are
    every service's. The feeds gateways and services poll (JWKS, revocations, policies) are
    access-logged at debug: at the default level a poll writes no line. Logging is set up by
    whoever runs it (``edgeway security serve``: JSON lines on stdout, like every process).

    ``tracing``: the service's tracer provider (default: the kit's, exporting by OTLP when
    ``OTEL_EXPORTER_OTLP_*`` is set). Its request spans and the revocation outbox's PRODUCER spans
    share it, so a revocation's events are in the trace of the request that revoked."""
    config = settings if settings is not None else SecuritySettings()
    service_tracing = tracing if tracing is not None else Tracing("security")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await open_state(config, tracing=service_tracing)
        app.state.security = state
        background = BackgroundTasks(log)
        background.start(_housekeeping(state), name="edgeway-security-housekeeping")
        if state.events is not None:
            state.events.start()
        log.info("security service up: issuer %s, active key %s", config.issuer, state.ring.active.kid)
        try:
            yield
        finally:
            await background.stop()
            if state.events is not None:
                await state.events.stop()
            await state.store.close()

    app = create_app(
        "security",
        settings=config,
        lifespan=lifespan,
        quiet_paths=POLLED_PATHS,
        configure_logging=False,
        tracing=service_tracing,
        cors_methods=("GET", "POST"),
        cors_headers=("Authorization", "Content-Type"),
        authenticated=(auth.caller, auth.admin),
        title="edgeway security service",
    )
    install_token_error_handler(app)
    app.include_router(oauth.router)
    app.include_router(feeds.router)
    app.include_router(admin.router)
    return app


async def open_state(settings: SecuritySettings, *, tracing: Tracing | None = None) -> SecurityState:
    """Open storage, load (or create) the signing keys, apply the seed file. With ``tracing``,
    the revocation outbox records a span per write (:mod:`edgeway.security_service.events`)."""
    database = db.database(settings.db_url, settings.db_schema)
    await database.create()
    store = SecurityStore(database.engine)
    keystore = FileKeyStore(settings.keys_path, load_kek(path=settings.kek_file))
    ring = keystore.load_or_create(settings.signing_alg)
    state = SecurityState.build(settings, store, keystore, ring)
    if settings.bus_url:
        state.events = RevocationEvents(
            settings.bus_url,
            settings.bus_prefix,
            database,
            replicas=settings.bus_replicas,
            tracer=tracing.tracer if tracing is not None else None,
        )
        store.outbox = state.events.outbox  # user changes publish UserChanged/UserDeleted too
    entries, _ = await store.revocations_since(0, time.time(), 1_000_000)
    for entry in entries:
        state.revocations.add(entry["jti"], entry["exp"])
    if settings.seed_file is not None:
        created = await apply_seed(
            store, state.passwords, load_seed(settings.seed_file), str(settings.seed_file)
        )
        log.info("seed %s: %d entries created", settings.seed_file, created)
    return state


async def _housekeeping(state: SecurityState) -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_INTERVAL)
        now = time.time()
        await state.store.prune_expired(now)
        state.revocations.prune(state.settings.leeway)
        state.prune_keys()
