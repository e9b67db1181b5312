"""The admin API (``/admin/...``): users, clients, roles, scopes, policies, keys, audit.

Every route needs a bearer token with the admin role; every change is written to the audit table
in the same transaction (see :mod:`edgeway.security.service.store`). Roles and policies are
validated as a whole policy document before they are stored, so a bad edit can never reach the
replicas.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Table

from edgeway.security.errors import PolicyError
from edgeway.security.policy import PolicySet
from edgeway.security.service import db
from edgeway.security.service.auth import admin
from edgeway.security.service.problems import Problem
from edgeway.security.service.state import SecurityState, state_of
from edgeway.security.service.store import SINGULAR, AlreadyExists, ChangeKind, NotFound
from edgeway.security.verify import Claims

router = APIRouter(prefix="/admin", tags=["admin"])

NAME = r"^[A-Za-z0-9._@:+-]{1,200}$"


# --- models ---------------------------------------------------------------------------------------


class UserIn(BaseModel):
    username: str = Field(pattern=NAME)
    password: str = Field(min_length=8, max_length=1024)
    roles: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)
    disabled: bool = False


class UserPatch(BaseModel):
    password: str | None = Field(None, min_length=8, max_length=1024)
    roles: list[str] | None = None
    attributes: dict[str, Any] | None = None
    disabled: bool | None = None


class ClientIn(BaseModel):
    client_id: str = Field(pattern=NAME)
    secret: str | None = Field(None, min_length=16, description="Omit to have one generated.")
    public: bool = Field(False, description="A public client (SPA, mobile app) has no secret.")
    roles: list[str] = Field(default_factory=list)
    scopes: list[str] = Field(default_factory=list)
    grant_types: list[str] = Field(default_factory=lambda: ["client_credentials"])
    attributes: dict[str, Any] = Field(default_factory=dict)


class ClientPatch(BaseModel):
    roles: list[str] | None = None
    scopes: list[str] | None = None
    grant_types: list[str] | None = None
    attributes: dict[str, Any] | None = None
    rotate_secret: bool = False


class RoleIn(BaseModel):
    permissions: list[str] = Field(default_factory=list)
    inherits: list[str] = Field(default_factory=list)
    description: str = ""


class ScopeIn(BaseModel):
    description: str = ""


# --- helpers --------------------------------------------------------------------------------------


def _user_out(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "password_hash"}


def _client_out(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "secret_hash"}
    out["public"] = row["secret_hash"] is None
    return out


async def _change(
    state: SecurityState,
    actor: Claims,
    kind: ChangeKind,
    table: Table,
    key: str,
    values: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    try:
        _, after = await state.store.change(f"user:{actor.sub}", kind, table, key, values)
    except AlreadyExists as exc:
        raise Problem(409, "Conflict", f"{key!r} exists already", kind="conflict") from exc
    except NotFound as exc:
        raise Problem(404, "Not Found", f"no {SINGULAR[table.name]} {key!r}") from exc
    return after


async def _get(state: SecurityState, table: Table, key: str) -> dict[str, Any]:
    row = await state.store.get(table, key)
    if row is None:
        raise Problem(404, "Not Found", f"no {SINGULAR[table.name]} {key!r}")
    return row


async def _upsert(
    state: SecurityState, actor: Claims, table: Table, key: str, values: dict[str, Any]
) -> Response:
    exists = await state.store.get(table, key) is not None
    await _change(state, actor, "update" if exists else "create", table, key, values)
    return Response(status_code=200 if exists else 201)


async def _validate_policy_document(state: SecurityState, edit: Any) -> None:
    document = await state.store.policy_document()
    edit(document)
    try:
        PolicySet(document)
    except PolicyError as exc:
        raise Problem(422, "Invalid Policy", str(exc), kind="invalid-policy") from exc


# --- users ----------------------------------------------------------------------------------------


@router.get("/users")
async def list_users(request: Request, _: Claims = Depends(admin)) -> list[dict[str, Any]]:
    return [_user_out(r) for r in await state_of(request).store.rows(db.users)]


@router.post("/users", status_code=201)
async def create_user(request: Request, body: UserIn, actor: Claims = Depends(admin)) -> dict[str, Any]:
    state = state_of(request)
    now = time.time()
    values = {
        "password_hash": await state.passwords.hash(body.password),
        "roles": body.roles,
        "attributes": body.attributes,
        "disabled": body.disabled,
        "created_at": now,
        "updated_at": now,
    }
    after = await _change(state, actor, "create", db.users, body.username, values)
    return _user_out(after or {})


@router.get("/users/{username}")
async def get_user(request: Request, username: str, _: Claims = Depends(admin)) -> dict[str, Any]:
    return _user_out(await _get(state_of(request), db.users, username))


@router.patch("/users/{username}")
async def patch_user(
    request: Request, username: str, body: UserPatch, actor: Claims = Depends(admin)
) -> dict[str, Any]:
    state = state_of(request)
    values: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"password"})
    if body.password is not None:
        values["password_hash"] = await state.passwords.hash(body.password)
    values["updated_at"] = time.time()
    after = await _change(state, actor, "update", db.users, username, values)
    return _user_out(after or {})


@router.delete("/users/{username}", status_code=204)
async def delete_user(request: Request, username: str, actor: Claims = Depends(admin)) -> Response:
    await _change(state_of(request), actor, "delete", db.users, username)
    return Response(status_code=204)


@router.post("/users/{username}/unlock", status_code=204)
async def unlock_user(request: Request, username: str, actor: Claims = Depends(admin)) -> Response:
    state = state_of(request)
    await _get(state, db.users, username)
    await state.store.reset_attempts(f"user:{username}")
    await state.store.audit(f"user:{actor.sub}", "user.unlock", f"user:{username}")
    return Response(status_code=204)


# --- clients --------------------------------------------------------------------------------------


@router.get("/clients")
async def list_clients(request: Request, _: Claims = Depends(admin)) -> list[dict[str, Any]]:
    return [_client_out(r) for r in await state_of(request).store.rows(db.clients)]


@router.post("/clients", status_code=201)
async def create_client(request: Request, body: ClientIn, actor: Claims = Depends(admin)) -> dict[str, Any]:
    state = state_of(request)
    if body.public and body.secret:
        raise Problem(422, "Invalid Request", "a public client cannot have a secret", kind="validation")
    if body.public and "client_credentials" in body.grant_types:
        raise Problem(
            422, "Invalid Request", "a public client cannot use client_credentials", kind="validation"
        )
    secret = None if body.public else (body.secret or secrets.token_urlsafe(32))
    now = time.time()
    values = {
        "secret_hash": await state.passwords.hash(secret) if secret else None,
        "roles": body.roles,
        "scopes": body.scopes,
        "grant_types": body.grant_types,
        "attributes": body.attributes,
        "created_at": now,
        "updated_at": now,
    }
    after = await _change(state, actor, "create", db.clients, body.client_id, values)
    out = _client_out(after or {})
    if secret is not None and body.secret is None:
        out["client_secret"] = secret  # shown once; only its hash is kept
    return out


@router.get("/clients/{client_id}")
async def get_client(request: Request, client_id: str, _: Claims = Depends(admin)) -> dict[str, Any]:
    return _client_out(await _get(state_of(request), db.clients, client_id))


@router.patch("/clients/{client_id}")
async def patch_client(
    request: Request, client_id: str, body: ClientPatch, actor: Claims = Depends(admin)
) -> dict[str, Any]:
    state = state_of(request)
    values: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"rotate_secret"})
    secret = secrets.token_urlsafe(32) if body.rotate_secret else None
    if secret is not None:
        values["secret_hash"] = await state.passwords.hash(secret)
    values["updated_at"] = time.time()
    after = await _change(state, actor, "update", db.clients, client_id, values)
    out = _client_out(after or {})
    if secret is not None:
        out["client_secret"] = secret
    return out


@router.delete("/clients/{client_id}", status_code=204)
async def delete_client(request: Request, client_id: str, actor: Claims = Depends(admin)) -> Response:
    await _change(state_of(request), actor, "delete", db.clients, client_id)
    return Response(status_code=204)


# --- roles, scopes, policies ----------------------------------------------------------------------


@router.get("/roles")
async def list_roles(request: Request, _: Claims = Depends(admin)) -> list[dict[str, Any]]:
    return await state_of(request).store.rows(db.roles)


@router.put("/roles/{name}")
async def put_role(request: Request, name: str, body: RoleIn, actor: Claims = Depends(admin)) -> Response:
    state = state_of(request)

    def edit(document: dict[str, Any]) -> None:
        document["roles"][name] = {"permissions": body.permissions, "inherits": body.inherits}

    await _validate_policy_document(state, edit)
    return await _upsert(state, actor, db.roles, name, body.model_dump())


@router.delete("/roles/{name}", status_code=204)
async def delete_role(request: Request, name: str, actor: Claims = Depends(admin)) -> Response:
    state = state_of(request)
    await _validate_policy_document(state, lambda document: document["roles"].pop(name, None))
    await _change(state, actor, "delete", db.roles, name)
    return Response(status_code=204)


@router.get("/scopes")
async def list_scopes(request: Request, _: Claims = Depends(admin)) -> list[dict[str, Any]]:
    return await state_of(request).store.rows(db.scopes)


@router.put("/scopes/{name}")
async def put_scope(request: Request, name: str, body: ScopeIn, actor: Claims = Depends(admin)) -> Response:
    return await _upsert(state_of(request), actor, db.scopes, name, body.model_dump())


@router.delete("/scopes/{name}", status_code=204)
async def delete_scope(request: Request, name: str, actor: Claims = Depends(admin)) -> Response:
    await _change(state_of(request), actor, "delete", db.scopes, name)
    return Response(status_code=204)


@router.get("/policies")
async def list_policies(request: Request, _: Claims = Depends(admin)) -> list[dict[str, Any]]:
    return [row["document"] for row in await state_of(request).store.rows(db.policies)]


@router.put("/policies/{policy_id}")
async def put_policy(
    request: Request, policy_id: str, body: dict[str, Any], actor: Claims = Depends(admin)
) -> Response:
    state = state_of(request)
    document = {**body, "id": policy_id}

    def edit(whole: dict[str, Any]) -> None:
        whole["policies"] = [p for p in whole["policies"] if p.get("id") != policy_id] + [document]

    await _validate_policy_document(state, edit)
    return await _upsert(state, actor, db.policies, policy_id, {"document": document})


@router.delete("/policies/{policy_id}", status_code=204)
async def delete_policy(request: Request, policy_id: str, actor: Claims = Depends(admin)) -> Response:
    await _change(state_of(request), actor, "delete", db.policies, policy_id)
    return Response(status_code=204)


# --- keys and audit -------------------------------------------------------------------------------


def _keys_out(state: SecurityState) -> list[dict[str, Any]]:
    active = state.ring.active.kid
    return [
        {
            "kid": k.kid,
            "alg": k.alg,
            "created_at": k.created_at,
            "retire_at": k.retire_at,
            "active": k.kid == active,
        }
        for k in state.ring.keys
    ]


@router.get("/keys")
async def list_keys(request: Request, _: Claims = Depends(admin)) -> list[dict[str, Any]]:
    return _keys_out(state_of(request))


@router.post("/keys/rotate")
async def rotate_keys(request: Request, actor: Claims = Depends(admin)) -> list[dict[str, Any]]:
    state = state_of(request)
    before = {"active": state.ring.active.kid}
    new = state.rotate_keys()
    await state.store.audit(f"user:{actor.sub}", "keys.rotate", f"key:{new.kid}", before, {"active": new.kid})
    return _keys_out(state)


@router.get("/audit")
async def audit_log(
    request: Request, since_id: int = 0, limit: int = 100, _: Claims = Depends(admin)
) -> list[dict[str, Any]]:
    return await state_of(request).store.audit_log(min(max(limit, 1), 1000), since_id)
