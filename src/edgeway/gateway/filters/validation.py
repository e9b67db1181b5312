"""Request validation per route: body size and JSON Schema, before anything is forwarded.

- ``max_body``: a declared ``Content-Length`` over the limit is refused (413) before a byte is
  read; a chunked body is counted as it streams and refused once it passes the limit, the excess
  dropped, never buffered (:meth:`~edgeway.http.body.BodyStream.limit_to`).
- ``json_schema``: the body (of the configured methods) is read whole, up to ``max_body`` (or the
  gateway's ``limits.max_body_bytes``), parsed and validated with a validator compiled when the
  route is built. Not JSON → 400; a wrong media type → 415; schema errors → 422 listing each
  error's JSON Pointer path and message. A valid body is forwarded byte for byte: the read body is
  replayed to the action, and the parsed document is left in ``ctx.state["json"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import ADMIT, GatewayEnv, RequestContext, Verdict
from edgeway.http import json_input
from edgeway.http.body import buffered_body
from edgeway.http.errors import BodyTooLarge

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

    from edgeway.gateway.filters.validation_config import RequestValidation

# The buffering bound of a schema route when neither the route nor the gateway sets one.
DEFAULT_SCHEMA_BODY_LIMIT = 10 * 1024 * 1024
_CONTENT_TYPE = b"content-type"


def compile_schema(schema: dict[str, Any]) -> Validator:
    """A validator for ``schema`` (its ``$schema`` dialect, else 2020-12) that checks formats."""
    # Imported here, when a route with a schema is built: jsonschema costs ~0.1 s at start.
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    cls = validator_for(schema, default=Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def is_json_media_type(value: bytes | None) -> bool:
    if value is None:
        return False
    media = value.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def pointer(path: Any) -> str:
    """A JSON Pointer (RFC 6901) for a jsonschema error path."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def too_large(limit: int) -> Rejection:
    return Rejection(413, "Content Too Large", f"the request body is larger than {limit} bytes", limit=limit)


class SizeLimit:
    """``max_body`` alone: a declared length is checked at once, a streamed body as it arrives."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def on_request(self, ctx: RequestContext) -> Verdict:
        ex = ctx.ex
        limit = self.limit
        length = ex.content_length
        if length is not None:
            if length > limit:
                raise too_large(limit)
        elif not ex.body.complete or ex.body.received:
            # Chunked: counted while it streams; the action (or the proxy) sees BodyTooLarge.
            ex.body.limit_to(limit)
        ctx.defer(self._translate)
        return ADMIT

    def _translate(self, failure: BaseException | None) -> None:
        if isinstance(failure, BodyTooLarge):
            raise too_large(self.limit) from None


class SchemaValidation:
    """``json_schema``: the body of the configured methods is read whole (in a task), parsed and
    validated; other methods get the size limit only."""

    def __init__(self, rule: RequestValidation, server_limit: int | None) -> None:
        assert rule.json_schema is not None
        limit = rule.max_body
        self.validator = compile_schema(rule.json_schema)
        self.methods = frozenset(m.encode() for m in rule.methods)
        self.read_limit = limit if limit is not None else server_limit or DEFAULT_SCHEMA_BODY_LIMIT
        self.max_errors = rule.max_errors
        self.sized = SizeLimit(limit) if limit is not None else None

    def on_request(self, ctx: RequestContext) -> Verdict:
        ex = ctx.ex
        if ex.method not in self.methods:
            return self.sized.on_request(ctx) if self.sized is not None else ADMIT
        read_limit = self.read_limit
        if ex.content_length is not None and ex.content_length > read_limit:
            raise too_large(read_limit)
        if not is_json_media_type(ex.header(_CONTENT_TYPE)):
            raise Rejection(
                415, "Unsupported Media Type", "this route takes a JSON body (Content-Type: application/json)"
            )
        return self._validate(ctx)

    async def _validate(self, ctx: RequestContext) -> None:
        ex = ctx.ex
        read_limit = self.read_limit
        try:
            body = await ex.body.read_all(read_limit)
        except BodyTooLarge:
            raise too_large(read_limit) from None
        try:
            document = json_input.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Rejection(400, "Bad Request", f"the request body is not valid JSON: {exc}") from None
        errors = sorted(self.validator.iter_errors(document), key=_order)
        if errors:
            raise Rejection(
                422,
                "Unprocessable Content",
                f"the request body does not match the route's schema ({len(errors)} error(s))",
                errors=[
                    {"path": pointer(e.absolute_path), "message": e.message}
                    for e in errors[: self.max_errors]
                ],
            )
        ex.body = buffered_body(body)
        ctx.state["json"] = document


def build_validation(route: Route, env: GatewayEnv) -> SizeLimit | SchemaValidation | None:
    rule = route.validate_request
    if rule is None:
        return None
    if rule.json_schema is None:
        assert rule.max_body is not None  # the schema requires one of the two
        return SizeLimit(rule.max_body)
    server_limit = env.config.limits.max_body_bytes
    return SchemaValidation(rule, None if server_limit is None else int(server_limit))


def _order(error: ValidationError) -> tuple[str, str]:
    return pointer(error.absolute_path), error.message
