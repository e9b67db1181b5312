"""Settings of a shop service: the service kit's, with the shop's defaults and where the security
service is.

Every field comes from ``EDGEWAY_<FIELD>`` like the kit's own (``EDGEWAY_PORT``,
``EDGEWAY_DATABASE_URL``, ``EDGEWAY_BUS_URL`` ...), so moving a service from the embedded defaults
to PostgreSQL, a NATS cluster or RabbitMQ is a change of environment, not of code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edgeway.service import ServiceSettings

__all__ = ["ShopSettings"]


class ShopSettings(ServiceSettings):
    data_dir: Path = Field(
        Path(".edgeway-demo"), description="where SQLite files, the maildir and caches are kept"
    )
    bus_prefix: str = Field("shop", description="prefix of the bus's streams/exchanges")
    # Two catalog instances share one SQLite file with their relays: speed over the last commits
    # before a power cut, for a demo.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "NORMAL"
    token_issuer: str | None = "edgeway-security"
    token_audience: str | None = "edgeway"
    revocation_poll_interval: float = Field(1.0, gt=0, description="seconds between revocation polls")
    inside_transport: Literal["http", "grpc"] = Field(
        "http",
        description="how shop services call each other on a screen's or a saga step's hot path: "
        "JSON over HTTP or gRPC (docs/shop.md says which calls, and why http is the default)",
    )
    security_url: str | None = Field(
        None, description="base URL of the security service: its token endpoint and revocation feed"
    )

    def revocation_feed(self) -> str | None:
        if self.revocations_url is None and self.security_url:
            return f"{self.security_url.rstrip('/')}/revocations"
        return super().revocation_feed()
