"""The JSON Schema of the gateway config, as published to editors (``edgeway config schema``)."""

from __future__ import annotations

from typing import Any

from edgeway.gateway.config.schema import GatewayConfig


def gateway_json_schema() -> dict[str, Any]:
    """Input-mode schema: what a user may write (durations as strings, defaults shown)."""
    schema = GatewayConfig.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
