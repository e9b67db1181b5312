"""Storage of the security service: one class, one transaction per change, audit in the same one.

Every admin change goes through :meth:`SecurityStore.change`, which reads the row before, writes
the new one and appends an audit entry (who, what, when, before/after) atomically, so the audit
can never miss a change that happened. Secret hashes never reach the audit: a changed hash shows
as ``"<changed>"``. A change to roles or policies bumps the policy version replicas poll for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from edgeway.bus.outbox import Outbox
from edgeway.security.events import user_event
from edgeway.security.revocation import TokenRevokedEvent
from edgeway.security_service import db

ChangeKind = Literal["create", "update", "delete"]

KEY_COLUMNS: dict[str, str] = {
    "edgeway_users": "username",
    "edgeway_clients": "client_id",
    "edgeway_roles": "name",
    "edgeway_scopes": "name",
    "edgeway_policies": "id",
}
# What one row of each table is called in audit entries and error messages.
SINGULAR: dict[str, str] = {
    "edgeway_users": "user",
    "edgeway_clients": "client",
    "edgeway_roles": "role",
    "edgeway_scopes": "scope",
    "edgeway_policies": "policy",
}
_SECRET_COLUMNS = ("password_hash", "secret_hash")
_POLICY_TABLES = {"edgeway_roles", "edgeway_policies"}
POLICY_VERSION = "policy_version"


class NotFound(LookupError):
    """No row with that key."""


class AlreadyExists(LookupError):
    """A row with that key exists already."""


@dataclass(frozen=True, slots=True)
class Attempts:
    failures: int
    last_failure: float
    locked_until: float | None


def _row(mapping: Any) -> dict[str, Any]:
    return dict(mapping._mapping) if mapping is not None else {}


def _redact(row: Mapping[str, Any] | None, other: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    if row is None:
        return None
    shown = dict(row)
    for column in _SECRET_COLUMNS:
        if column in shown:
            value = shown.pop(column)
            changed = other is not None and other.get(column) != value
            shown[column.removesuffix("_hash")] = "<changed>" if changed else ("<set>" if value else None)
    return shown


class SecurityStore:
    """``outbox``: when given, every user change also writes a user event (``edgeway.security.events``)
    into it, in the change's transaction, for the relay to publish."""

    def __init__(self, engine: AsyncEngine, *, outbox: Outbox | None = None) -> None:
        self.engine = engine
        self.outbox = outbox

    async def close(self) -> None:
        await self.engine.dispose()

    # --- generic rows with audit ----------------------------------------------------------------

    async def get(self, table: Table, key: str) -> dict[str, Any] | None:
        column = table.c[KEY_COLUMNS[table.name]]
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(table).where(column == key))).first()
        return _row(row) if row is not None else None

    async def rows(self, table: Table) -> list[dict[str, Any]]:
        column = table.c[KEY_COLUMNS[table.name]]
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(table).order_by(column))).all()
        return [_row(r) for r in rows]

    async def change(
        self,
        actor: str,
        kind: ChangeKind,
        table: Table,
        key: str,
        values: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Create, update (merge ``values``) or delete one row and audit it; return (before, after)."""
        column = table.c[KEY_COLUMNS[table.name]]
        async with self.engine.begin() as conn:
            found = (await conn.execute(select(table).where(column == key).with_for_update())).first()
            before = _row(found) if found is not None else None
            after: dict[str, Any] | None
            if kind == "create":
                if before is not None:
                    raise AlreadyExists(key)
                after = {**dict(values or {}), column.name: key}
                await conn.execute(insert(table).values(**after))
            elif before is None:
                raise NotFound(key)
            elif kind == "update":
                after = {**before, **dict(values or {})}
                await conn.execute(update(table).where(column == key).values(**dict(values or {})))
            else:
                after = None
                await conn.execute(delete(table).where(column == key))
            singular = SINGULAR[table.name]
            audit_id = await self._audit(
                conn, actor, f"{singular}.{kind}", f"{singular}:{key}", before, after
            )
            if self.outbox is not None and table.name == db.users.name:
                # The audit id grows with every change: the event's version for local copies.
                await self.outbox.add(conn, user_event(key, after, audit_id))
            if table.name in _POLICY_TABLES:
                await self._bump(conn, POLICY_VERSION)
        return before, after

    async def audit(
        self,
        actor: str,
        action: str,
        target: str,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
    ) -> None:
        async with self.engine.begin() as conn:
            await self._audit(conn, actor, action, target, before, after)

    async def audit_log(self, limit: int = 100, since_id: int = 0) -> list[dict[str, Any]]:
        query = select(db.audit).where(db.audit.c.id > since_id).order_by(db.audit.c.id).limit(limit)
        async with self.engine.connect() as conn:
            return [_row(r) for r in (await conn.execute(query)).all()]

    @staticmethod
    async def _audit(
        conn: AsyncConnection,
        actor: str,
        action: str,
        target: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> int:
        result = await conn.execute(
            insert(db.audit).values(
                at=time.time(),
                actor=actor,
                action=action,
                target=target,
                before=_redact(before, after),
                after=_redact(after, before),
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    # --- policy version -------------------------------------------------------------------------

    @staticmethod
    async def _bump(conn: AsyncConnection, name: str) -> None:
        counter = db.counters
        result = await conn.execute(
            update(counter).where(counter.c.name == name).values(value=counter.c.value + 1)
        )
        if result.rowcount == 0:
            await conn.execute(insert(counter).values(name=name, value=1))

    async def policy_version(self) -> int:
        async with self.engine.connect() as conn:
            value = await conn.scalar(select(db.counters.c.value).where(db.counters.c.name == POLICY_VERSION))
        return int(value or 0)

    async def policy_document(self) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            version = await conn.scalar(
                select(db.counters.c.value).where(db.counters.c.name == POLICY_VERSION)
            )
            role_rows = (await conn.execute(select(db.roles).order_by(db.roles.c.name))).all()
            policy_rows = (await conn.execute(select(db.policies).order_by(db.policies.c.id))).all()
        return {
            "version": int(version or 0),
            "roles": {
                r.name: {"permissions": list(r.permissions), "inherits": list(r.inherits)} for r in role_rows
            },
            "policies": [dict(p.document) for p in policy_rows],
        }

    # --- refresh tokens -------------------------------------------------------------------------

    async def add_refresh_token(self, row: Mapping[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(db.refresh_tokens).values(**row))

    async def find_refresh_token(self, token_hash: str) -> dict[str, Any] | None:
        query = select(db.refresh_tokens).where(db.refresh_tokens.c.token_hash == token_hash)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _row(row) if row is not None else None

    async def claim_refresh_token(self, token_hash: str, now: float) -> bool:
        """Mark a refresh token used; False if it was used already (the compare-and-set of reuse)."""
        table = db.refresh_tokens
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(table)
                .where(
                    table.c.token_hash == token_hash, table.c.used_at.is_(None), table.c.revoked.is_(False)
                )
                .values(used_at=now)
            )
        return bool(result.rowcount == 1)

    async def revoke_family(
        self, family_id: str, reason: str, now: float, *, outbox: Outbox | None = None
    ) -> list[str]:
        """Revoke every refresh token of a family and deny-list its live access tokens.

        With an ``outbox`` a :class:`TokenRevokedEvent` event per access token is queued in the same
        transaction (published by the service's relay).
        """
        table = db.refresh_tokens
        async with self.engine.begin() as conn:
            rows = (await conn.execute(select(table).where(table.c.family_id == family_id))).all()
            await conn.execute(update(table).where(table.c.family_id == family_id).values(revoked=True))
            jtis = [
                (r.access_jti, r.access_exp)
                for r in rows
                if r.access_jti is not None and r.access_exp is not None and r.access_exp > now
            ]
            for jti, exp in jtis:
                await conn.execute(
                    insert(db.revocations).values(jti=jti, exp=exp, revoked_at=now, reason=reason)
                )
            if outbox is not None and jtis:
                await outbox.add_many(conn, [TokenRevokedEvent(jti=j, exp=e, reason=reason) for j, e in jtis])
        return [jti for jti, _ in jtis]

    # --- revocations ----------------------------------------------------------------------------

    async def revoke_jti(
        self, jti: str, exp: float, reason: str, now: float, *, outbox: Outbox | None = None
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(db.revocations).values(jti=jti, exp=exp, revoked_at=now, reason=reason))
            if outbox is not None:
                await outbox.add(conn, TokenRevokedEvent(jti=jti, exp=exp, reason=reason))

    async def is_revoked(self, jti: str) -> bool:
        async with self.engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(db.revocations).where(db.revocations.c.jti == jti)
            )
        return bool(count)

    async def revocations_since(self, seq: int, now: float, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Live entries after ``seq`` and the cursor to pass next time."""
        table = db.revocations
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(table).where(table.c.seq > seq).order_by(table.c.seq).limit(limit))
            ).all()
        cursor = rows[-1].seq if rows else seq
        entries = [{"seq": r.seq, "jti": r.jti, "exp": r.exp} for r in rows if r.exp > now]
        return entries, int(cursor)

    async def prune_expired(self, now: float) -> None:
        async with self.engine.begin() as conn:
            # Keep the newest revocation row even if expired: it anchors the feed's cursor.
            newest = await conn.scalar(select(func.max(db.revocations.c.seq)))
            await conn.execute(
                delete(db.revocations).where(db.revocations.c.exp < now, db.revocations.c.seq != newest)
            )
            await conn.execute(delete(db.refresh_tokens).where(db.refresh_tokens.c.expires_at < now))

    # --- login attempts -------------------------------------------------------------------------

    async def attempts(self, keys: Sequence[str]) -> dict[str, Attempts]:
        table = db.login_attempts
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(table).where(table.c.key.in_(list(keys))))).all()
        return {r.key: Attempts(r.failures, r.last_failure, r.locked_until) for r in rows}

    async def record_failure(self, key: str, now: float, window: float) -> Attempts:
        table = db.login_attempts
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(table).where(table.c.key == key).with_for_update())).first()
            if row is None:
                await conn.execute(
                    insert(table).values(key=key, failures=1, last_failure=now, locked_until=None)
                )
                return Attempts(1, now, None)
            # A quiet window forgives old failures (but not an active lock).
            failures = 1 if now - row.last_failure > window else row.failures + 1
            await conn.execute(
                update(table).where(table.c.key == key).values(failures=failures, last_failure=now)
            )
            return Attempts(failures, now, row.locked_until)

    async def lock(self, key: str, until: float) -> None:
        table = db.login_attempts
        async with self.engine.begin() as conn:
            await conn.execute(update(table).where(table.c.key == key).values(locked_until=until))

    async def reset_attempts(self, key: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(db.login_attempts).where(db.login_attempts.c.key == key))
