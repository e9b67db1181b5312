"""Settings of a shop service: the service kit's, plus where it listens, stores and publishes.

Every field comes from ``EDGEWAY_<FIELD>`` like the kit's own (``EDGEWAY_PORT``,
``EDGEWAY_DATABASE_URL``, ``EDGEWAY_BUS_URL`` ...), so moving a service from the embedded defaults
to PostgreSQL, a NATS cluster or RabbitMQ is a change of environment, not of code.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edgeway.service import ServiceSettings

__all__ = ["ShopSettings"]


class ShopSettings(ServiceSettings):
    host: str = Field("127.0.0.1", description="address the service binds")
    port: int = Field(8000, ge=1, le=65535, description="port the service binds")
    data_dir: Path = Field(
        Path(".edgeway-demo"), description="where SQLite files, the maildir and caches are kept"
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL; default sqlite+aiosqlite:///<data_dir>/<service>.db "
        "(postgresql+asyncpg://... for PostgreSQL)",
    )
    bus_url: str | None = Field(None, description="nats://... (default: nats_url) or amqp://... for RabbitMQ")
    bus_prefix: str = Field("shop", description="prefix of the bus's streams/exchanges")
    bus_replicas: int = Field(
        1, description="NATS stream replicas for the channels this service declares: 3 on a cluster"
    )
    security_url: str | None = Field(
        None, description="base URL of the security service: revocations are polled from it"
    )
    revocation_poll: float = Field(1.0, gt=0, description="seconds between revocation polls")
    run_relay: bool = Field(True, description="publish this instance's outbox (one relay per SQLite file)")

    def database(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    def broker(self) -> str:
        return self.bus_url or self.nats_url
