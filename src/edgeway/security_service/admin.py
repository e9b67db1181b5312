"""The admin API (``/admin/...``): users, clients, roles, scopes, policies, keys, audit.

Every route needs a bearer token with the admin role; every change is written to the audit table
in the same transaction (see :mod:`edgeway.security_service.store`). Roles and policies are
validated as a whole policy document before they are stored, so a bad edit can never reach the
replicas.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import Table

from edgeway.security.errors import PolicyError
from edgeway.security.policy import PolicySet
from edgeway.security.verify import Claims
from edgeway.security_service import db
from edgeway.security_service.auth import admin
from edgeway.security_service.problems import problem
from edgeway.security_service.state import SecurityState, state_of
from edgeway.security_service.store import SINGULAR, AlreadyExists, ChangeKind, NotFound
from edgeway.service.models import Count, Int64, Patch
from edgeway.service.openapi import problem_responses

router = APIRouter(prefix="/admin", tags=["admin"])

GrantType = Literal["password", "client_credentials", "refresh_token"]

NAME = r"^[A-Za-z0-9._@:+-]{1,200}$"
# Custom claims are copied into every access token of the user or client, and verifiers refuse a
# token over MAX_TOKEN_BYTES (8 KiB): bounded here, when written, so that an account can never
# be edited into one that cannot log in (the token endpoint checks the final size as well).
MAX_ATTRIBUTES_BYTES = 2048
MAX_LIST_ITEMS = 64

Name = Annotated[str, Field(pattern=NAME)]
PathName = Annotated[str, Path(pattern=NAME)]
Names = Annotated[list[Name], Field(max_length=MAX_LIST_ITEMS)]


def _bounded_attributes(value: dict[str, Any]) -> dict[str, Any]:
    size = len(orjson.dumps(value))
    if size > MAX_ATTRIBUTES_BYTES:
        raise ValueError(
            f"attributes take {size} bytes as JSON, more than {MAX_ATTRIBUTES_BYTES}: they are copied "
            "into every access token, and verifiers refuse tokens over 8 KiB"
        )
    return value


Attributes = Annotated[dict[str, Any], AfterValidator(_bounded_attributes)]


class UserIn(BaseModel):
    username: str = Field(pattern=NAME)
    password: str = Field(min_length=8, max_length=1024)
    roles: Names = Field(default_factory=list)
    attributes: Attributes = Field(default_factory=dict)
    disabled: bool = False


class UserPatch(Patch):
    password: str | None = Field(None, min_length=8, max_length=1024)
    roles: Names | None = None
    attributes: Attributes | None = None
    disabled: bool | None = None


def _default_grants() -> list[GrantType]:
    return ["client_credentials"]


class ClientIn(BaseModel):
    client_id: str = Field(pattern=NAME)
    secret: str | None = Field(
        None, min_length=16, max_length=1024, description="Omit to have one generated."
    )
    public: bool = Field(False, description="A public client (SPA, mobile app) has no secret.")
    roles: Names = Field(default_factory=list)
    scopes: Names = Field(default_factory=list)
    grant_types: list[GrantType] = Field(default_factory=_default_grants, max_length=3)
    attributes: Attributes = Field(default_factory=dict)


class ClientPatch(Patch):
    roles: Names | None = None
    scopes: Names | None = None
    grant_types: list[GrantType] | None = Field(None, max_length=3)
    attributes: Attributes | None = None
    rotate_secret: bool | None = None


class RoleIn(BaseModel):
    permissions: list[str] = Field(default_factory=list, max_length=1000)
    inherits: Names = Field(default_factory=list)
    description: str = Field("", max_length=1000)


class ScopeIn(BaseModel):
    description: str = Field("", max_length=1000)


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
        raise problem(409, "Conflict", f"{key!r} exists already", kind="conflict") from exc
    except NotFound as exc:
        raise problem(404, "Not Found", f"no {SINGULAR[table.name]} {key!r}") from exc
    return after


async def _get(state: SecurityState, table: Table, key: str) -> dict[str, Any]:
    row = await state.store.get(table, key)
    if row is None:
        raise problem(404, "Not Found", f"no {SINGULAR[table.name]} {key!r}")
    return row


async def _upsert(
    state: SecurityState,
    actor: Claims,
    table: Table,
    key: str,
    values: dict[str, Any],
    response: Response,
) -> dict[str, Any]:
    """Create or replace; 201 with the stored entry when created, 200 when replaced."""
    exists = await state.store.get(table, key) is not None
    after = await _change(state, actor, "update" if exists else "create", table, key, values)
    response.status_code = 200 if exists else 201
    return after or {}


# A PUT answers the stored entry, 201 when it created it.
CREATED: dict[int | str, dict[str, Any]] = {201: {"description": "Created"}}


async def _validate_policy_document(state: SecurityState, edit: Any) -> None:
    document = await state.store.policy_document()
    edit(document)
    try:
        PolicySet(document)
    except PolicyError as exc:
        raise problem(422, "Invalid Policy", str(exc), kind="invalid-policy") from exc


# --- users ----------------------------------------------------------------------------------------


@router.get("/users")
async def list_users(request: Request, _: Claims = Depends(admin)) -> list[dict[str, Any]]:
    return [_user_out(r) for r in await state_of(request).store.rows(db.users)]


@router.post("/users", status_code=201, responses=problem_responses(409))
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
async def get_user(request: Request, username: PathName, _: Claims = Depends(admin)) -> dict[str, Any]:
    return _user_out(await _get(state_of(request), db.users, username))


@router.patch("/users/{username}")
async def patch_user(
    request: Request, username: PathName, body: UserPatch, actor: Claims = Depends(admin)
) -> dict[str, Any]:
    state = state_of(request)
    values: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"password"})
    if body.password is not None:
        values["password_hash"] = await state.passwords.hash(body.password)
    values["updated_at"] = time.time()
    after = await _change(state, actor, "update", db.users, username, values)
    return _user_out(after or {})


@router.delete("/users/{username}", status_code=204)
async def delete_user(request: Request, username: PathName, actor: Claims = Depends(admin)) -> Response:
    await _change(state_of(request), actor, "delete", db.users, username)
    return Response(status_code=204)


@router.post("/users/{username}/unlock", status_code=204)
async def unlock_user(request: Request, username: PathName, actor: Claims = Depends(admin)) -> Response:
    state = state_of(request)
    await _get(state, db.users, username)
    await state.store.reset_attempts(f"user:{username}")
    await state.store.audit(f"user:{actor.sub}", "user.unlock", f"user:{username}")
    return Response(status_code=204)


# --- clients --------------------------------------------------------------------------------------


@router.get("/clients")
async def list_clients(request: Request, _: Claims = Depends(admin)) -> list[dict[str, Any]]:
    return [_client_out(r) for r in await state_of(request).store.rows(db.clients)]


@router.post("/clients", status_code=201, responses=problem_responses(409))
async def create_client(request: Request, body: ClientIn, actor: Claims = Depends(admin)) -> dict[str, Any]:
    state = state_of(request)
    if body.public and body.secret:
        raise problem(422, "Invalid Request", "a public client cannot have a secret", kind="validation")
    if body.public and "client_credentials" in body.grant_types:
        raise problem(
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
async def get_client(request: Request, client_id: PathName, _: Claims = Depends(admin)) -> dict[str, Any]:
    return _client_out(await _get(state_of(request), db.clients, client_id))


@router.patch("/clients/{client_id}")
async def patch_client(
    request: Request, client_id: PathName, body: ClientPatch, actor: Claims = Depends(admin)
) -> dict[str, Any]:
    state = state_of(request)
    values: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"rotate_secret"})
    if "client_credentials" in values.get("grant_types", ()):
        current = await _get(state, db.clients, client_id)
        if current["secret_hash"] is None:
            raise problem(
                422, "Invalid Request", "a public client cannot use client_credentials", kind="validation"
            )
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
async def delete_client(request: Request, client_id: PathName, actor: Claims = Depends(admin)) -> Response:
    await _change(state_of(request), actor, "delete", db.clients, client_id)
    return Response(status_code=204)


# --- roles, scopes, policies ----------------------------------------------------------------------


@router.get("/roles")
async def list_roles(request: Request, _: Claims = Depends(admin)) -> list[dict[str, Any]]:
    return await state_of(request).store.rows(db.roles)


@router.put("/roles/{name}", responses={**CREATED, **problem_responses(409)})
async def put_role(
    request: Request, name: PathName, body: RoleIn, response: Response, actor: Claims = Depends(admin)
) -> dict[str, Any]:
    state = state_of(request)

    def edit(document: dict[str, Any]) -> None:
        document["roles"][name] = {"permissions": body.permissions, "inherits": body.inherits}

    await _validate_policy_document(state, edit)
    return await _upsert(state, actor, db.roles, name, body.model_dump(), response)


@router.delete("/roles/{name}", status_code=204)
async def delete_role(request: Request, name: PathName, actor: Claims = Depends(admin)) -> Response:
    state = state_of(request)
    await _validate_policy_document(state, lambda document: document["roles"].pop(name, None))
    await _change(state, actor, "delete", db.roles, name)
    return Response(status_code=204)


@router.get("/scopes")
async def list_scopes(request: Request, _: Claims = Depends(admin)) -> list[dict[str, Any]]:
    return await state_of(request).store.rows(db.scopes)


@router.put("/scopes/{name}", responses={**CREATED, **problem_responses(409)})
async def put_scope(
    request: Request, name: PathName, body: ScopeIn, response: Response, actor: Claims = Depends(admin)
) -> dict[str, Any]:
    return await _upsert(state_of(request), actor, db.scopes, name, body.model_dump(), response)


@router.delete("/scopes/{name}", status_code=204)
async def delete_scope(request: Request, name: PathName, actor: Claims = Depends(admin)) -> Response:
    await _change(state_of(request), actor, "delete", db.scopes, name)
    return Response(status_code=204)


@router.get("/policies")
async def list_policies(request: Request, _: Claims = Depends(admin)) -> list[dict[str, Any]]:
    return [row["document"] for row in await state_of(request).store.rows(db.policies)]


@router.put("/policies/{policy_id}", responses={**CREATED, **problem_responses(409)})
async def put_policy(
    request: Request,
    policy_id: PathName,
    body: dict[str, Any],
    response: Response,
    actor: Claims = Depends(admin),
) -> dict[str, Any]:
    state = state_of(request)
    document = {**body, "id": policy_id}

    def edit(whole: dict[str, Any]) -> None:
        whole["policies"] = [p for p in whole["policies"] if p.get("id") != policy_id] + [document]

    await _validate_policy_document(state, edit)
    return await _upsert(state, actor, db.policies, policy_id, {"document": document}, response)


@router.delete("/policies/{policy_id}", status_code=204)
async def delete_policy(request: Request, policy_id: PathName, actor: Claims = Depends(admin)) -> Response:
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
    request: Request,
    since_id: Annotated[Count, Query(description="entries after this id (ids are 32-bit)")] = 0,
    limit: Annotated[Int64, Query(description="at most 1000")] = 100,
    _: Claims = Depends(admin),
) -> list[dict[str, Any]]:
    return await state_of(request).store.audit_log(min(max(limit, 1), 1000), since_id)
