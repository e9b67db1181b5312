"""Config of the request validation filter (``validate`` on a route): body size and JSON schema."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.config.base import StrictModel
from edgeway.gateway.config.units import ByteSize


class RequestValidation(StrictModel):
    """Request body checks before forwarding: size and JSON schema."""

    max_body: ByteSize | None = Field(
        None, description="Largest request body; 413 beyond (checked while streaming, never buffered whole)."
    )
    json_schema: dict[str, Any] | None = Field(
        None,
        description="JSON Schema (draft 2020-12 unless `$schema` says otherwise) the JSON body must "
        "satisfy; 400 for a body that is not JSON, 422 listing every error (path and message).",
    )
    methods: list[str] = Field(
        default_factory=lambda: ["POST", "PUT", "PATCH"],
        min_length=1,
        description="Methods whose body `json_schema` applies to; a body is required for them.",
    )
    max_errors: int = Field(20, gt=0, description="At most this many schema errors are listed in a 422.")

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        # Imported here: jsonschema costs ~0.1 s at start, paid only by configs that use it.
        from jsonschema import SchemaError
        from jsonschema.validators import validator_for

        try:
            validator_for(value).check_schema(value)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise PydanticCustomError(
                "json_schema",
                "not a valid JSON Schema at {where}: {message}",
                {"where": where, "message": exc.message},
            ) from exc
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        return [m.upper() for m in value]

    @model_validator(mode="after")
    def _something(self) -> RequestValidation:
        if self.max_body is None and self.json_schema is None:
            raise PydanticCustomError("validate", "set max_body, json_schema or both")
        return self
