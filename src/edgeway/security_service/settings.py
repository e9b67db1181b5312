"""Settings of the security service: a YAML file, ``EDGEWAY_SECURITY_*`` variables, or code.

They are the service kit's :class:`~edgeway.service.ServiceSettings` (read under the
``EDGEWAY_SECURITY_`` prefix) plus the service's own fields. The database is the kit's
``database_url``; ``db_url`` (and ``EDGEWAY_SECURITY_DB_URL``), its name before, is still read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edgeway.security.errors import SecurityConfigError
from edgeway.service.settings import ServiceSettings

_OLD_DB_ENV = "EDGEWAY_SECURITY_DB_URL"


class SecuritySettings(ServiceSettings):
    # No .env file (the kit's settings read one): it may hold EDGEWAY_SECURITY_KEK, which is not a
    # field, and unknown fields are refused here.
    model_config = SettingsConfigDict(env_prefix="EDGEWAY_SECURITY_", extra="forbid", env_file=None)

    # identity of the issuer
    issuer: str = "edgeway-security"
    public_url: str | None = Field(None, description="Base URL clients reach; defaults to the request's.")
    audience: list[str] = Field(default_factory=lambda: ["edgeway"])

    port: int = Field(8400, ge=1, le=65535, description="port the service binds")

    # storage
    database_url: str | None = Field(
        "sqlite+aiosqlite:///./edgeway-security.db",
        description="SQLAlchemy async URL (sqlite+aiosqlite:///... or postgresql+asyncpg://...); "
        "also read as db_url",
    )
    db_schema: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", description="PostgreSQL schema (created if missing)."
    )
    keys_path: Path = Path("./edgeway-security-keys.json")
    kek_file: Path | None = Field(
        None, description="File holding the key-encryption key; else $EDGEWAY_SECURITY_KEK."
    )
    signing_alg: Literal["EdDSA", "ES256"] = "EdDSA"
    seed_file: Path | None = None

    # tokens
    access_token_ttl: float = Field(900.0, gt=0)
    refresh_token_ttl: float = Field(30 * 86400.0, gt=0)
    key_overlap: float | None = Field(None, description="Seconds a rotated-out key stays in the JWKS.")
    leeway: float = Field(30.0, ge=0)
    admin_role: str = "admin"

    # login throttling and lockout
    throttle_free_attempts: int = Field(3, ge=0)
    throttle_base_delay: float = Field(1.0, ge=0)
    throttle_max_delay: float = Field(300.0, ge=0)
    throttle_window: float = Field(900.0, gt=0)
    lockout_threshold: int = Field(10, ge=1)
    lockout_duration: float = Field(900.0, gt=0)
    trust_forwarded_for: bool = False

    # password hashing (argon2id); the defaults are argon2-cffi's RFC 9106 profile
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_cost: int = Field(65536, ge=8)
    argon2_parallelism: int = Field(4, ge=1)

    revocation_page_size: int = Field(1000, ge=1)

    # browsers calling the service directly (a single-page app logging in without a gateway)
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to call the service from a browser (CORS)."
    )

    # events over the bus: revocations (besides the /revocations feed) and user changes
    bus_url: str | None = Field(
        None,
        description="Broker URL (nats://… or amqp://…): publish a TokenRevokedEvent per revoked token "
        "and a UserChanged/UserDeleted per user change, through an outbox in the service's database. "
        "None: the /revocations feed only, no user events.",
    )
    bus_prefix: str = Field(
        "ew", description="Name prefix of the bus's streams/exchanges (the gateways' too)."
    )

    @model_validator(mode="before")
    @classmethod
    def _db_url_is_database_url(cls, data: Any) -> Any:
        # Given in code or the settings file, the older name wins like any explicit value.
        if isinstance(data, dict) and "db_url" in data:
            data = dict(data)
            data["database_url"] = data.pop("db_url")
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = super().settings_customise_sources(
            settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        )
        at = sources.index(env_settings) + 1  # below EDGEWAY_SECURITY_DATABASE_URL
        return (*sources[:at], _OldDatabaseEnv(settings_cls), *sources[at:])

    @property
    def db_url(self) -> str:
        """The database URL (``database_url``, under the name it had before)."""
        return self.database("security")

    @property
    def overlap(self) -> float:
        return self.key_overlap if self.key_overlap is not None else self.access_token_ttl + self.leeway

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> SecuritySettings:
        file = Path(path)
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SecurityConfigError(f"{file}: cannot read security settings: {exc}") from exc
        if not isinstance(data, dict):
            raise SecurityConfigError(f"{file}: security settings must be a mapping")
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SecurityConfigError(f"{file}: {problems}") from exc


class _OldDatabaseEnv(PydanticBaseSettingsSource):
    """``EDGEWAY_SECURITY_DB_URL``, the older name of ``EDGEWAY_SECURITY_DATABASE_URL``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        value = os.environ.get(_OLD_DB_ENV)
        return {"database_url": value} if value else {}
