"""Tables of the security service (SQLAlchemy Core), in the service kit's database.

SQLite by default, PostgreSQL when ``database_url`` says so. With ``db_schema`` the tables live in
that PostgreSQL schema (through ``schema_translate_map``), which also gives each test its own schema.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from edgeway.bus.outbox import outbox_table
from edgeway.service.database import Database

metadata = MetaData()

users = Table(
    "edgeway_users",
    metadata,
    Column("username", String(200), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("roles", JSON, nullable=False),
    Column("attributes", JSON, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

clients = Table(
    "edgeway_clients",
    metadata,
    Column("client_id", String(200), primary_key=True),
    Column("secret_hash", Text, nullable=True),  # NULL: a public client (SPA, mobile app)
    Column("roles", JSON, nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("grant_types", JSON, nullable=False),
    Column("attributes", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

roles = Table(
    "edgeway_roles",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("permissions", JSON, nullable=False),
    Column("inherits", JSON, nullable=False),
    Column("description", Text, nullable=False, default=""),
)

scopes = Table(
    "edgeway_scopes",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("description", Text, nullable=False, default=""),
)

policies = Table(
    "edgeway_policies",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("document", JSON, nullable=False),
)

counters = Table(
    "edgeway_counters",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Integer, nullable=False),
)

refresh_tokens = Table(
    "edgeway_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family_id", String(64), nullable=False, index=True),
    Column("subject", String(200), nullable=False),
    Column("client_id", String(200), nullable=True),
    Column("scope", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),  # set when rotated; a second use is reuse
    Column("revoked", Boolean, nullable=False, default=False),
    Column("access_jti", String(64), nullable=True),
    Column("access_exp", Float, nullable=True),
)

revocations = Table(
    "edgeway_revocations",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("jti", String(64), nullable=False, index=True),
    Column("exp", Float, nullable=False),
    Column("revoked_at", Float, nullable=False),
    Column("reason", String(100), nullable=False),
)

# TokenRevokedEvent events, written in the transaction that revokes (see service/events.py).
outbox = outbox_table(metadata, "edgeway_security_outbox")

audit = Table(
    "edgeway_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target", String(300), nullable=False),
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
)

login_attempts = Table(
    "edgeway_login_attempts",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure", Float, nullable=False),
    Column("locked_until", Float, nullable=True),
)


def database(url: str, schema: str | None = None) -> Database:
    """The service's database: its tables, at ``url`` (in ``schema``).

    SQLite keeps ``synchronous=FULL`` (the kit's default): a committed revocation survives a
    power cut.
    """
    return Database(url, metadata, schema=schema)
