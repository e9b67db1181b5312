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
from edgeway.gateway.core import json_input
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import GatewayEnv, Handler, RequestContext
from edgeway.http.body import buffered_body
from edgeway.http.errors import BodyTooLarge

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

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


def build_validation(route: Route, env: GatewayEnv, next_handler: Handler) -> Handler | None:
    rule = route.validate_request
    if rule is None:
        return None
    limit = rule.max_body
    if rule.json_schema is None:
        assert limit is not None  # the schema requires one of the two
        return _size_only(limit, next_handler)
    validator = compile_schema(rule.json_schema)
    methods = frozenset(m.encode() for m in rule.methods)
    server_limit = env.config.limits.max_body_bytes
    read_limit = limit if limit is not None else server_limit or DEFAULT_SCHEMA_BODY_LIMIT
    max_errors = rule.max_errors
    sized = _size_only(limit, next_handler) if limit is not None else next_handler

    async def validate(ctx: RequestContext) -> None:
        ex = ctx.ex
        if ex.method not in methods:
            await sized(ctx)
            return
        if ex.content_length is not None and ex.content_length > read_limit:
            raise too_large(read_limit)
        if not is_json_media_type(ex.header(_CONTENT_TYPE)):
            raise Rejection(
                415, "Unsupported Media Type", "this route takes a JSON body (Content-Type: application/json)"
            )
        try:
            body = await ex.body.read_all(read_limit)
        except BodyTooLarge:
            raise too_large(read_limit) from None
        try:
            document = json_input.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Rejection(400, "Bad Request", f"the request body is not valid JSON: {exc}") from None
        errors = sorted(validator.iter_errors(document), key=_order)
        if errors:
            raise Rejection(
                422,
                "Unprocessable Content",
                f"the request body does not match the route's schema ({len(errors)} error(s))",
                errors=[
                    {"path": pointer(e.absolute_path), "message": e.message} for e in errors[:max_errors]
                ],
            )
        ex.body = buffered_body(body)
        ctx.state["json"] = document
        await next_handler(ctx)

    return validate


def _order(error: ValidationError) -> tuple[str, str]:
    return pointer(error.absolute_path), error.message


def _size_only(limit: int, next_handler: Handler) -> Handler:
    async def limit_size(ctx: RequestContext) -> None:
        ex = ctx.ex
        length = ex.content_length
        if length is not None:
            if length > limit:
                raise too_large(limit)
        elif not ex.body.complete or ex.body.received:
            # Chunked: counted while it streams; the action (or the proxy) sees BodyTooLarge.
            ex.body.limit_to(limit)
        try:
            await next_handler(ctx)
        except BodyTooLarge:
            raise too_large(limit) from None

    return limit_size
