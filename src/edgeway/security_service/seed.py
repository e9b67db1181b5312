"""Bootstrap data: a YAML seed file with scopes, roles, users, clients and policies.

Applied at start; an entry that exists already is left as it is (an admin may have changed it),
so restarting with the same seed is harmless. ``${NAME}`` and ``${NAME:-default}`` are replaced
from the environment, which keeps passwords and secrets out of the file::

    scopes: [catalog, orders]
    roles:
      admin: ["*"]
      customer: ["catalog:read", "orders:create"]
    users:
      - {username: admin, password: "${SHOP_ADMIN_PASSWORD}", roles: [admin]}
      - {username: alice, password: "alice-secret", roles: [customer], attributes: {region: eu}}
    clients:
      - {client_id: web-bff, public: true, grant_types: [password, refresh_token], scopes: [catalog, orders]}
      - {client_id: reporting, secret: "${REPORTING_SECRET}", scopes: [orders], roles: [reporter]}
    policies:
      - {id: owner-reads-own-order, actions: ["orders:read"], when: {eq: [resource.owner, subject.sub]}}
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edgeway.security.errors import PolicyError, SecurityConfigError
from edgeway.security.policy import PolicySet
from edgeway.security_service import db
from edgeway.security_service.admin import ClientIn, RoleIn, UserIn
from edgeway.security_service.passwords import Passwords
from edgeway.security_service.store import SecurityStore

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
ACTOR = "seed"


def interpolate(text: str, env: Mapping[str, str] | None = None, source: str = "seed") -> str:
    environ = os.environ if env is None else env

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise SecurityConfigError(f"{source}: environment variable {name} is not set (used as ${{{name}}})")

    return _VARIABLE.sub(value, text)


def load_seed(path: str | Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    file = Path(path)
    try:
        data = yaml.safe_load(interpolate(file.read_text(), env, str(file))) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SecurityConfigError(f"{file}: cannot read the seed file: {exc}") from exc
    if not isinstance(data, dict):
        raise SecurityConfigError(f"{file}: a seed file is a mapping")
    unknown = set(data) - {"scopes", "roles", "users", "clients", "policies"}
    if unknown:
        raise SecurityConfigError(f"{file}: unknown seed sections {sorted(unknown)}")
    roles = data.get("roles") or {}
    try:
        PolicySet({"roles": roles, "policies": data.get("policies") or []})
    except PolicyError as exc:
        raise SecurityConfigError(f"{file}: {exc}") from exc
    return data


async def apply_seed(
    store: SecurityStore, passwords: Passwords, data: Mapping[str, Any], source: str = "seed"
) -> int:
    """Create what does not exist yet; return how many entries were created."""
    created = 0

    async def create(table: Any, key: str, values: dict[str, Any]) -> None:
        nonlocal created
        if await store.get(table, key) is None:
            await store.change(ACTOR, "create", table, key, values)
            created += 1

    try:
        scopes = data.get("scopes") or []
        items = scopes.items() if isinstance(scopes, Mapping) else ((s, "") for s in scopes)
        for name, description in items:
            await create(db.scopes, str(name), {"description": str(description or "")})
        for name, spec in (data.get("roles") or {}).items():
            role = RoleIn(permissions=spec) if isinstance(spec, list) else RoleIn(**spec)
            await create(db.roles, str(name), role.model_dump())
        now = time.time()
        for entry in data.get("users") or []:
            user = UserIn(**entry)
            if await store.get(db.users, user.username) is None:
                await create(
                    db.users,
                    user.username,
                    {
                        "password_hash": await passwords.hash(user.password),
                        "roles": user.roles,
                        "attributes": user.attributes,
                        "disabled": user.disabled,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
        for entry in data.get("clients") or []:
            client = ClientIn(**entry)
            if client.public == bool(client.secret):
                raise SecurityConfigError(
                    f"{source}: client {client.client_id} needs a secret, or public: true (and no secret)"
                )
            if await store.get(db.clients, client.client_id) is None:
                await create(
                    db.clients,
                    client.client_id,
                    {
                        "secret_hash": await passwords.hash(client.secret) if client.secret else None,
                        "roles": client.roles,
                        "scopes": client.scopes,
                        "grant_types": client.grant_types,
                        "attributes": client.attributes,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
        for policy in data.get("policies") or []:
            await create(db.policies, str(policy["id"]), {"document": dict(policy)})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SecurityConfigError(f"{source}: {problems}") from exc
    return created
