"""A JSON request body nested deeper than the one limit (:data:`edgeway.http.json_input.MAX_DEPTH`)
is a 400 before the app reads it.

FastAPI parses a body with Python's json, which reads about 1,000 levels, while pydantic writes
fewer than 300: an endpoint that stores or echoes a free-form value (``dict[str, Any]``) accepted
a document it could not answer with, and failed with a 500 after doing its work. The gateway
refuses the same documents (docs/aggregation.md, Limits), so a kit service behind it and one
called directly agree.

The bodies FastAPI reads as JSON (no ``Content-Type``, ``application/json``,
``application/*+json``) are read whole here, as FastAPI reads them for a body parameter, then
handed to the app unchanged; other bodies pass through as they stream.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgeway.http.json_input import TooDeep, nests_too_deep
from edgeway.service.problems import problem_response

__all__ = ["JsonDepthMiddleware"]


class JsonDepthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _read_as_json(scope):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if nests_too_deep(body):
            await problem_response(400, str(TooDeep()), instance=scope["path"])(scope, receive, send)
            return

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)


def _read_as_json(scope: Scope) -> bool:
    # FastAPI's rule for parsing a body as JSON (fastapi.routing.get_request_handler).
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"content-type":
            media = value.partition(b";")[0].strip().lower()
            kind, _, subtype = media.partition(b"/")
            return kind == b"application" and (subtype == b"json" or subtype.endswith(b"+json"))
    return True
