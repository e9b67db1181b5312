"""What a Python endpoint receives (:class:`Request`) and may return (:class:`Response`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from edgeway.gateway.actions.endpoints.clients import Services
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import Identity, RequestContext
from edgeway.http import json_input


@dataclass(slots=True)
class Response:
    """A response with a status and headers of the endpoint's choosing: ``json`` is encoded,
    ``content`` sent as is (with ``media_type``)."""

    json: Any = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None
    media_type: str | None = None


class QueryParams:
    """The query string: ``get(name)`` is the first value, ``getall(name)`` every value."""

    __slots__ = ("_values",)

    def __init__(self, raw: bytes) -> None:
        self._values = parse_qs(raw.decode("latin-1"), keep_blank_values=True)

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._values.get(name)
        return values[0] if values else default

    def getall(self, name: str) -> list[str]:
        return list(self._values.get(name, ()))

    def __getitem__(self, name: str) -> str:
        values = self._values.get(name)
        if not values:
            raise KeyError(name)
        return values[0]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._values.items()}


class RequestHeaders:
    """Request headers by case-insensitive name."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower().encode("latin-1")
        for key, value in self._raw:
            if key.lower() == lname:
                return value.decode("latin-1")
        return default

    def getall(self, name: str) -> list[str]:
        lname = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self._raw if k.lower() == lname]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


class Request:
    """The request a Python endpoint serves."""

    __slots__ = ("_body", "_body_limit", "_ctx", "_query", "headers", "options", "services")

    def __init__(
        self, ctx: RequestContext, services: Services, options: Mapping[str, Any], body_limit: int
    ) -> None:
        self._ctx = ctx
        self.services = services
        self.options = options  # the route's `endpoint.options`
        self.headers = RequestHeaders(ctx.ex.headers)
        self._query: QueryParams | None = None
        self._body: bytes | None = None
        self._body_limit = body_limit

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"

    @property
    def method(self) -> str:
        return self._ctx.ex.method.decode()

    @property
    def path(self) -> str:
        """The normalised path the route matched."""
        return self._ctx.match.path

    @property
    def path_params(self) -> dict[str, str]:
        return self._ctx.match.params

    @property
    def query(self) -> QueryParams:
        if self._query is None:
            self._query = QueryParams(self._ctx.ex.query)
        return self._query

    @property
    def identity(self) -> Identity | None:
        """The authenticated caller (set by the route's `auth`), or None."""
        return self._ctx.identity

    @property
    def request_id(self) -> str:
        return self._ctx.ex.request_id.decode()

    @property
    def client(self) -> str:
        """The client's address."""
        return self._ctx.ex.client

    async def body(self) -> bytes:
        """The whole request body (read once, within the gateway's body limit)."""
        if self._body is None:
            self._body = await self._ctx.ex.body.read_all(self._body_limit)
        return self._body

    async def json(self) -> Any:
        """The body as JSON; a body that is not JSON answers 400."""
        data = await self.body()
        if not data:
            return None
        try:
            return json_input.loads(data)
        except orjson.JSONDecodeError as exc:
            raise Rejection(400, "Bad Request", f"the request body is not valid JSON: {exc}") from None
