"""The legacy monolith: product reviews and the old account pages, in one plain FastAPI app.

It is what a shop has before microservices: one process, one database holding everything,
no service kit (no health/metrics/registry, no outbox). It checks tokens with the kit's verifier
alone, so a token revoked at logout is refused here too (it polls the security service's
``/revocations`` like every other verifier): a client may call it directly, past the edges.
The gateways reach it through *strangler* routes: ``/reviews/**`` and ``/account/**`` go here,
except the routes already moved to new services — ``/account/profile`` moves to the profile
service in steps (the edges' progressive strangler) once the ``strangler.account-profile`` flag
is on, without a restart.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Header, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, func, select

from edgeway.demo.shop.common.settings import ShopSettings
from edgeway.observability.logs import setup_logging
from edgeway.service.backing import quiet_libraries
from edgeway.service.database import Database
from edgeway.service.errors import AuthenticationError, JwksUnavailableError
from edgeway.service.http import HeadOnlyHttpTools
from edgeway.service.identity import Identity, IdentityConfig, JwksVerifier, identify
from edgeway.service.openapi import offline_app
from edgeway.service.problems import install_problem_handlers
from edgeway.service.tls import uvicorn_tls_options

metadata = MetaData()
reviews = Table(
    "reviews",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sku", String(32), nullable=False, index=True),
    Column("author", String(200), nullable=False),
    Column("rating", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
accounts = Table(
    "accounts",
    metadata,
    Column("username", String(200), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("address", Text, nullable=False),
    Column("member_since", String(10), nullable=False),
)

SEED_REVIEWS = [
    ("CUP-01", "alice", 5, "Keeps the espresso hot. Heavy, in a good way."),
    ("CUP-01", "bob", 4, "Nice, a bit small for a doppio."),
    ("POT-01", "bob", 5, "Twenty years and still my favourite."),
    ("GRD-01", "alice", 4, "Takes a minute per dose, worth it."),
    ("BEA-01", "alice", 5, "Blueberries and jasmine."),
]
SEED_ACCOUNTS = [
    ("alice", "Alice Liddell", "1 Rabbit Hole, Oxford", "2011-03-14"),
    ("bob", "Bob Builder", "2 Yard Lane, Bristol", "2014-09-01"),
]


class NewReview(BaseModel):
    rating: int = Field(ge=1, le=5)
    text: str = Field(min_length=1, max_length=2000)


class Legacy:
    def __init__(self, settings: ShopSettings) -> None:
        self.settings = settings
        self.db = Database(settings.database("legacy"), metadata)
        # Key set fetched on the first token, revocations polled from then on (ShopSettings
        # finds the feed beside security_url or the JWKS).
        self.verifier = JwksVerifier.from_settings(settings)
        # The token alone: the monolith trusts no forwarded identity headers.
        self.identity = IdentityConfig(self.verifier) if self.verifier is not None else None

    async def start(self) -> None:
        await self.db.create()
        async with self.db.sessions() as session, session.begin():
            if not await session.scalar(select(func.count()).select_from(reviews)):
                now = time.time()
                await session.execute(
                    reviews.insert(),
                    [
                        {"sku": s, "author": a, "rating": r, "text": t, "created_at": now}
                        for s, a, r, t in SEED_REVIEWS
                    ],
                )
                await session.execute(
                    accounts.insert(),
                    [
                        {"username": u, "display_name": n, "address": a, "member_since": m}
                        for u, n, a, m in SEED_ACCOUNTS
                    ],
                )

    async def stop(self) -> None:
        if self.verifier is not None:
            await self.verifier.aclose()
        await self.db.dispose()

    async def user(self, authorization: str | None) -> Identity:
        """The caller, from its verified token."""
        if self.identity is None:
            raise _Unauthorized("this server cannot check tokens (no JWKS URL configured)")
        try:
            return await identify(self.identity, authorization, {})
        except (AuthenticationError, JwksUnavailableError) as exc:
            raise _Unauthorized(str(exc)) from exc


class _Unauthorized(Exception):
    pass


async def _caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Identity:
    legacy: Legacy = request.app.state.legacy
    return await legacy.user(authorization)


User = Annotated[Identity, Depends(_caller)]


def create_app(settings: ShopSettings | None = None) -> FastAPI:
    legacy = Legacy(settings if settings is not None else ShopSettings.load())

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await legacy.start()
        yield
        await legacy.stop()

    # Its /docs works offline like the services' (the assets are served from here).
    app = offline_app(title="legacy shop", lifespan=lifespan)
    app.state.legacy = legacy
    # Not a kit service, but its errors (404, validation, an unexpected 500) read like theirs.
    install_problem_handlers(app, last_resort=True)
    if legacy.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=legacy.settings.cors_origins, allow_headers=["Authorization"]
        )

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_request: Request, exc: _Unauthorized) -> JSONResponse:
        return JSONResponse(
            {"title": "Unauthorized", "status": 401, "detail": str(exc)},
            status_code=401,
            media_type="application/problem+json",
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.get("/", response_class=HTMLResponse)
    async def home() -> str:
        return "<html><body><h1>The Shop (since 2009)</h1><p>Reviews and your account.</p></body></html>"

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/reviews/{sku}")
    async def product_reviews(sku: str) -> dict[str, Any]:
        async with legacy.db.sessions() as session:
            rows = (
                await session.execute(select(reviews).where(reviews.c.sku == sku).order_by(reviews.c.id))
            ).all()
        items = [{"author": r.author, "rating": r.rating, "text": r.text} for r in rows]
        average = round(sum(r.rating for r in rows) / len(rows), 2) if rows else None
        return {"sku": sku, "reviews": items, "average": average, "count": len(items)}

    @app.post("/reviews/{sku}", status_code=201)
    async def add_review(sku: str, body: NewReview, user: User) -> dict[str, Any]:
        async with legacy.db.sessions() as session, session.begin():
            await session.execute(
                reviews.insert().values(
                    sku=sku, author=user.subject, rating=body.rating, text=body.text, created_at=time.time()
                )
            )
        return {"sku": sku, "author": user.subject, "rating": body.rating, "text": body.text}

    @app.get("/account/profile")
    async def account_profile(user: User) -> dict[str, Any]:
        async with legacy.db.sessions() as session:
            row = (await session.execute(select(accounts).where(accounts.c.username == user.subject))).first()
        return {
            "username": user.subject,
            "display_name": row.display_name if row else user.subject,
            "address": row.address if row else None,
            "member_since": row.member_since if row else None,
            "served_by": "legacy",
        }

    @app.get("/account/orders")
    async def account_orders(user: User) -> dict[str, Any]:
        # The old shop's order history: before the orders service existed.
        return {"username": user.subject, "orders": [], "note": "orders since the new shop are at /orders"}

    return app


def main() -> None:
    settings = ShopSettings.load()
    setup_logging("legacy", settings.log_level)
    quiet_libraries()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        http=HeadOnlyHttpTools,
        **uvicorn_tls_options(settings),
    )
