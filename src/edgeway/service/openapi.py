"""A service's OpenAPI document and its pages: the errors it really answers, and docs that work offline.

**Offline docs.** FastAPI's ``/docs`` (Swagger UI) and ``/redoc`` load their JavaScript and CSS
from a CDN, so on a laptop without the internet, or in a cluster without egress, they are blank
pages. :func:`offline_app` builds the app with them served by the service itself, from the
``fastapi-offline`` package (a copy of swagger-ui-dist and ReDoc's standalone bundle) under
``/static-offline-docs``; Swagger UI's online spec validator is switched off too, so the page
makes no request outside the service.

**Problems.**
FastAPI documents only the success response and a 422 with its own ``HTTPValidationError``
shape, while every error a service answers is an RFC 9457 problem (:mod:`edgeway.service.problems`).
A client generated from such a document cannot read any error. :func:`declare_problems` makes
the document say what the service really answers:

* a ``Problem`` schema component, and ``application/problem+json`` with it as the content of
  every 4xx/5xx response (FastAPI's 422 included);
* on every operation: 500 (an unexpected error, answered with a request id);
* with path parameters: 404; with any parameter or a body: 422 (validation); with a body: 400
  (one that cannot be parsed at all);
* when the route depends on one of the ``authenticated`` dependencies (the kit's ``Caller``
  and its role/scope guards by default): 401 and 403;
* any other error status a route answers is named on its decorator, with or without a
  description — ``@router.post("/products", responses=problem_responses(409))`` — and gets the same
  problem content here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

from edgeway.service.problems import PROBLEM_JSON

__all__ = ["DOCS_ASSETS", "PROBLEM_SCHEMA", "declare_problems", "offline_app", "problem_responses"]

# Where the docs pages' JavaScript, CSS and favicon are served (FastAPIOffline's default).
DOCS_ASSETS = "/static-offline-docs"


def offline_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app (``kwargs`` as for ``FastAPI``) whose ``/docs`` and ``/redoc`` pages load
    every asset from the service itself; ``docs_url``/``redoc_url`` move or (``None``) remove
    them as usual. See the module docstring."""
    # The online validator would be the one request to another host (a badge image).
    kwargs["swagger_ui_parameters"] = {"validatorUrl": None, **(kwargs.get("swagger_ui_parameters") or {})}
    kwargs.setdefault("static_url", DOCS_ASSETS)
    return FastAPIOffline(**kwargs)


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details; members beyond these are extensions of the problem type.",
    "properties": {
        "type": {"type": "string", "description": "a URI naming the problem type"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the request path"},
        "request_id": {"type": "string", "description": "quote it when reporting the error"},
        "errors": {
            "type": "array",
            "description": "validation errors (422)",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "field": {"type": "string"},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "required": ["type", "title", "status"],
    "additionalProperties": True,
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route decorator: the extra error statuses it answers."""
    return {status: {"description": _phrase(status)} for status in statuses}


def declare_problems(app: FastAPI, *, authenticated: Iterable[Callable[..., Any]] = ()) -> None:
    """Make ``app``'s OpenAPI document declare its problem responses (see the module docstring)."""
    from edgeway.service.identity import current_identity  # identity imports the kit's errors

    auth = frozenset([current_identity, *authenticated])
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_problems(generate(), app, auth)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it


def _with_problems(
    document: dict[str, Any], app: FastAPI, auth: frozenset[Callable[..., Any]]
) -> dict[str, Any]:
    paths: dict[str, Any] = document.get("paths", {})
    for route in _api_routes(app):
        if not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            wanted = {500}
            dependant = route.dependant
            if dependant.path_params:
                wanted.add(404)
            if _has_inputs(dependant):
                wanted.add(422)
            if dependant.body_params:
                wanted.add(400)  # a body that cannot be parsed at all
            if _depends_on(dependant, auth):
                wanted.update((401, 403))
            for status in wanted:
                responses.setdefault(str(status), {"description": _phrase(status)})
            success = next(
                (r["content"] for c, r in responses.items() if c[:1] == "2" and "content" in r), None
            )
            for code, response in responses.items():
                if code[:1] == "2" and "content" not in response and success is not None:
                    response["content"] = success  # another success status, the same body
                elif code[:1] in ("4", "5") or code == "default":
                    response["content"] = {PROBLEM_JSON: {"schema": PROBLEM_REF}}
                    if response.get("description") in (None, "", "Validation Error"):
                        response["description"] = _phrase(int(code)) if code.isdigit() else "Error"
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    # FastAPI's own validation error shapes are never answered: the problem above is.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def _api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route with its full path: an ``APIRoute``, or (FastAPI 0.16x, where an included
    router keeps its routes unprefixed) a route context that reads like one."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:
        yield from (route for route in app.routes if isinstance(route, APIRoute))
        return
    for context in contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context


def _has_inputs(dependant: Dependant) -> bool:
    if dependant.path_params or dependant.query_params or dependant.header_params:
        return True
    if dependant.cookie_params or dependant.body_params:
        return True
    return any(_has_inputs(sub) for sub in dependant.dependencies)


def _depends_on(dependant: Dependant, calls: frozenset[Callable[..., Any]]) -> bool:
    return any(sub.call in calls or _depends_on(sub, calls) for sub in dependant.dependencies)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
