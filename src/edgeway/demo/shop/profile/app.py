"""Profile: who a user is, from a local copy of the security service's users, and their preferences.

The ``users_copy`` table follows ``UserChanged`` / ``UserDeleted`` events (``edgeway.security.events``)
through a :class:`~edgeway.bus.readcopy.ReadCopy`: no call to the security service per request,
and a role or e-mail changed there shows here moments later. ``GET /account/profile`` is the new
implementation of the legacy monolith's account page; the gateways' strangler route moves it here
in steps once the ``strangler.account-profile`` flag is on.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from pydantic import BaseModel, Field
from sqlalchemy import JSON, Boolean, Column, Float, Integer, MetaData, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from edgeway.bus.readcopy import ReadCopy
from edgeway.demo.shop.common.copies import fill_if_empty
from edgeway.demo.shop.common.events import CHANNELS
from edgeway.demo.shop.common.guards import require_any_role
from edgeway.demo.shop.common.settings import ShopSettings
from edgeway.security.events import UserChanged, UserDeleted
from edgeway.service import Caller, Identity, Problem, Service, problem_responses, service_of

metadata = MetaData()
users_copy = Table(
    "users_copy",
    metadata,
    Column("username", String(200), primary_key=True),
    Column("email", String(320), nullable=True),
    Column("display_name", String(200), nullable=True),
    Column("roles", JSON, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
)
preferences = Table(
    "preferences",
    metadata,
    Column("username", String(200), primary_key=True),
    Column("newsletter", Boolean, nullable=False),
    Column("language", String(16), nullable=False),
    Column("updated_at", Float, nullable=False),
)


USERNAME = r"^[A-Za-z0-9._@:+-]{1,200}$"  # the security service's user names


class Preferences(BaseModel):
    newsletter: bool = False
    language: str = Field("en", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")


class User(BaseModel):
    username: str
    email: str | None
    display_name: str | None
    roles: list[str]
    disabled: bool


class Profile(User):
    preferences: Preferences
    served_by: str = "profile"


class ProfileService(Service):
    def __init__(self, settings: ShopSettings | None = None) -> None:
        super().__init__("profile", metadata, settings or ShopSettings.load(), channels=CHANNELS)
        self.users = ReadCopy(self.db.sessions, users_copy, key="username", version="version")

        @self.users.upsert(UserChanged)
        def _changed(e: UserChanged) -> dict[str, Any]:
            email = e.attributes.get("email")
            name = e.attributes.get("display_name")
            return {
                "username": e.username,
                "email": email if isinstance(email, str) else None,
                "display_name": name if isinstance(name, str) else None,
                "roles": e.roles,
                "disabled": e.disabled,
                "version": e.version,
            }

        @self.users.delete(UserDeleted)
        def _deleted(e: UserDeleted) -> str:
            return e.username

        self.users.attach(self.bus, group="profile-users")
        fill_if_empty(self, self.users)


def _svc(request: Request) -> ProfileService:
    return service_of(request, ProfileService)


Svc = Annotated[ProfileService, Depends(_svc)]
Staff = Annotated[Identity, Depends(require_any_role("support", "admin"))]
router = APIRouter()


def create_app(settings: ShopSettings | None = None) -> FastAPI:
    app = ProfileService(settings).create_app(
        title="profile", description="Users (local copy) and preferences."
    )
    app.include_router(router)
    return app


def _user(row: Any) -> User:
    return User.model_validate(row, from_attributes=True)


async def _profile(svc: ProfileService, username: str) -> Profile:
    async with svc.db.sessions() as session:
        row = (await session.execute(select(users_copy).where(users_copy.c.username == username))).first()
        prefs = (await session.execute(select(preferences).where(preferences.c.username == username))).first()
    if row is None:
        # The copy lags the security service by moments; a brand-new user may not be here yet.
        raise Problem(404, f"no profile for {username} yet", headers={"Retry-After": "1"})
    chosen = Preferences(newsletter=prefs.newsletter, language=prefs.language) if prefs else Preferences()
    return Profile(**_user(row).model_dump(), preferences=chosen)


@router.get("/profile/me", responses=problem_responses(404))
async def me(svc: Svc, caller: Caller) -> Profile:
    return await _profile(svc, caller.subject)


@router.put("/profile/me/preferences")
async def set_preferences(body: Preferences, svc: Svc, caller: Caller) -> Preferences:
    values = {**body.model_dump(), "updated_at": time.time()}
    module: Any = postgresql if svc.db.dialect == "postgresql" else sqlite
    stmt = module.insert(preferences).values(username=caller.subject, **values)
    stmt = stmt.on_conflict_do_update(index_elements=[preferences.c.username], set_=values)
    async with svc.transaction() as session:
        await session.execute(stmt)
    return body


@router.get("/account/profile", responses=problem_responses(404))
async def account_profile(svc: Svc, caller: Caller) -> Profile:
    """The account page, new implementation (the strangler route's target)."""
    return await _profile(svc, caller.subject)


@router.get("/users")
async def list_users(svc: Svc, _staff: Staff) -> list[User]:
    async with svc.db.sessions() as session:
        rows = (await session.execute(select(users_copy).order_by(users_copy.c.username))).all()
    return [_user(r) for r in rows]


@router.get("/users/{username}")
async def get_user(username: Annotated[str, Path(pattern=USERNAME)], svc: Svc, _staff: Staff) -> User:
    async with svc.db.sessions() as session:
        row = (await session.execute(select(users_copy).where(users_copy.c.username == username))).first()
    if row is None:
        raise Problem(404, f"no user {username}")
    return _user(row)
