"""Config of the aggregate action (``aggregate`` on a route): its calls, how their outputs merge,
the deadline. The checks of the calls taken together are in :mod:`.checks`; templates and
dotted paths are parsed by :mod:`.templates`.

Each action model offers ``service_refs()`` (the services it calls, with their key paths) so the
top-level cross-checks can report unknown services for every action alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.actions.aggregate.checks import META_KEY, CallFacts, check_calls
from edgeway.gateway.actions.aggregate.templates import (
    Ref,
    Steps,
    Template,
    TemplateError,
    parse_steps,
    parse_template,
)
from edgeway.gateway.actions.transcode.config import GrpcMethodRef
from edgeway.gateway.config.base import TOKEN, HeaderName, LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.units import ByteSize, Duration
from edgeway.gateway.upstream.config import FORWARD_DEFAULT, forwardable

if TYPE_CHECKING:
    from edgeway.gateway.config.patterns import PathPattern


_CALL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_KEY = re.compile(r"[^.\[\]{}\s]+")


class AggregateCall(StrictModel):
    """One service call of an aggregate endpoint."""

    service: str = Field(description="Name of a service under `services`.")
    method: str = Field("GET", description="HTTP method of the call.")
    path: str | None = Field(
        None,
        description="Upstream path template, e.g. `/orders/{path.id}` or `/users/{calls.order.user_id}` "
        "(see docs/aggregation.md for references); required unless the call is `grpc`.",
    )
    grpc: GrpcMethodRef | None = Field(
        None,
        description="Call this gRPC method of the service instead of an HTTP path: `body` (a JSON "
        "template) is its request message, its response message (as JSON) the call's response.",
    )
    query: dict[str, str] = Field(
        default_factory=dict,
        description="Query parameters, each a template; a parameter whose only reference is missing "
        "is left out.",
    )
    headers: dict[HeaderName, str] = Field(
        default_factory=dict, description="Request headers, each a template."
    )
    body: Any = Field(
        None,
        description="`client` forwards the client's body as is; any other value is a JSON template "
        "(strings in it are templates; a string that is exactly one reference keeps the value's type).",
    )
    forward_headers: list[HeaderName] | None = Field(
        None, description="Client headers copied onto this call; absent means the endpoint's list."
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="Calls that must finish first, besides those this call's templates reference.",
    )
    for_each: str | None = Field(
        None,
        description="Fan out: one call per element of this list reference, e.g. "
        "`{calls.order.items[*].product_id}`; the element is `{item}`. The output is the list of "
        "results in element order.",
    )
    batch: str | None = Field(
        None,
        description="One call for all elements of this list reference; `{batch}` is the values joined "
        "by `batch_separator` in the path, query and headers, the JSON list in a body.",
    )
    batch_separator: str = Field(",", description="Joins batched values in the path, query and headers.")
    concurrency: int = Field(8, ge=1, le=256, description="Fan-out calls in flight at once.")
    on_item_error: Literal["fail", "null", "drop"] = Field(
        "fail",
        description="A failed fan-out element: `fail` fails the call; `null` puts null in its place; "
        "`drop` leaves it out (both mark the response incomplete).",
    )
    timeout: Duration | None = Field(
        None, gt=0, description="Time for each HTTP exchange of this call; absent means the service's."
    )
    required: bool = Field(
        True,
        description="A failed required call fails the endpoint; a failed optional one is reported in "
        "`_meta` and the rest is answered. Absent: required, unless the call has a `fallback`.",
    )
    fallback: Any = Field(
        None,
        description="Value used in place of the shaped response when the call fails (the call becomes "
        "optional); also what dependent calls read.",
    )
    unwrap: str | None = Field(
        None, description="Dotted path of the part of the response to keep, e.g. `data`."
    )
    allow: list[str] | None = Field(
        None, description="Dotted paths to keep (everything else is dropped), e.g. `[id, items[*].sku]`."
    )
    deny: list[str] | None = Field(None, description="Dotted paths to drop.")
    rename: dict[str, str] = Field(
        default_factory=dict,
        description="Dotted path → new key name, renaming the last key in place: "
        "`{customer.name: full_name}`.",
    )
    group: str | None = Field(None, description="Key to put this call's output under in the response.")
    hidden: bool = Field(
        False,
        description="The response only feeds other calls (ids to look up, a token): it is not part "
        "of the endpoint's answer.",
    )
    collection: bool = Field(
        False,
        description="The response is a JSON array: shaping applies to each element, and `group` is needed "
        "to place it (an array has no keys to merge).",
    )

    _facts: CallFacts | None = PrivateAttr(None)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if TOKEN.fullmatch(value) is None:
            raise PydanticCustomError("method", "'{method}' is not an HTTP method", {"method": value})
        return value.upper()

    _forward = field_validator("forward_headers")(forwardable)

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None and _PLAIN_KEY.fullmatch(value) is None:
            raise PydanticCustomError("group", "group '{group}' must be one plain key", {"group": value})
        if value == META_KEY:
            raise PydanticCustomError("group", "'_meta' is reserved for the gateway's completion report")
        return value

    @property
    def has_fallback(self) -> bool:
        return "fallback" in self.model_fields_set

    @property
    def facts(self) -> CallFacts:
        """The parsed templates and paths (set by validation)."""
        assert self._facts is not None  # set by the validator of every constructed instance
        return self._facts

    @model_validator(mode="after")
    def _parse(self) -> AggregateCall:
        problems: list[tuple[Loc, str]] = []

        def template(loc: Loc, text: str) -> Template | None:
            try:
                return parse_template(text)
            except TemplateError as exc:
                problems.append((loc, str(exc)))
                return None

        def steps(loc: Loc, text: str, *, indices: bool = True) -> Steps | None:
            try:
                parsed = parse_steps(text)
            except TemplateError as exc:
                problems.append((loc, str(exc)))
                return None
            if not parsed:
                problems.append((loc, "a dotted path may not be empty"))
                return None
            if not indices and any(isinstance(step, int) for step in parsed):
                problems.append((loc, f"{text!r}: use '[*]' for lists here, not a position"))
                return None
            return parsed

        if self.grpc is not None:
            path = parse_template("/")  # a gRPC call has no path; its method is its target
            if self.path is not None:
                problems.append((("path",), "a `grpc` call has no path: set either `path` or `grpc`"))
            if self.query:
                problems.append((("query",), "a `grpc` call has no query: put the values in its `body`"))
            if self.for_each is not None or self.batch is not None:
                key = "for_each" if self.for_each is not None else "batch"
                problems.append(((key,), f"a `grpc` call cannot fan out ({key}); use an HTTP call"))
        elif self.path is None:
            problems.append((("path",), "a call needs a `path` (HTTP) or a `grpc` method"))
            path = None
        else:
            path = template(("path",), self.path)
            if path is not None and not self.path.startswith("/"):
                problems.append((("path",), f"path {self.path!r} must start with '/'"))
        query = {k: t for k, v in self.query.items() if (t := template(("query", k), v)) is not None}
        headers = {k: t for k, v in self.headers.items() if (t := template(("headers", k), v)) is not None}
        body_refs: list[tuple[Loc, Ref]] = []
        if self.body is not None and self.body != "client":
            _body_templates(self.body, ("body",), template, body_refs)
        fan: dict[str, Template] = {}
        for key in ("for_each", "batch"):
            text = getattr(self, key)
            if text is not None and (t := template((key,), text)) is not None:
                if t.whole is None:
                    problems.append(
                        ((key,), f"{key} must be exactly one reference, e.g. '{{calls.x.items[*].id}}'")
                    )
                elif t.whole.source in {"item", "batch"}:
                    problems.append(((key,), f"{key} cannot read '{{{t.whole.text}}}'"))
                else:
                    fan[key] = t
        unwrap = steps(("unwrap",), self.unwrap) if self.unwrap is not None else None
        allow = [s for i, p in enumerate(self.allow or ()) if (s := steps(("allow", i), p, indices=False))]
        deny = [s for i, p in enumerate(self.deny or ()) if (s := steps(("deny", i), p, indices=False))]
        rename: list[tuple[Steps, str]] = []
        for source, target in self.rename.items():
            parsed = steps(("rename", source), source, indices=False)
            if _PLAIN_KEY.fullmatch(target) is None:
                problems.append((("rename", source), f"the new name {target!r} must be one plain key"))
            elif parsed is not None:
                rename.append((parsed, target))
        if self.for_each is not None and self.batch is not None:
            problems.append((("batch",), "set either for_each or batch, not both"))
        if self.has_fallback:
            if "required" not in self.model_fields_set:
                # A fallback stands in for a failed call: by itself it makes the call optional.
                self.required = False
            elif self.required:
                problems.append(
                    (
                        ("fallback",),
                        "a required call has no use for a fallback: drop `required: true` or the fallback",
                    )
                )
        if problems:
            raise LocatedProblemsError(problems)
        assert path is not None
        self._facts = CallFacts(
            path=path,
            query=query,
            headers=headers,
            body_refs=tuple(body_refs),
            for_each=fan.get("for_each"),
            batch=fan.get("batch"),
            unwrap=unwrap,
            allow=tuple(allow) if self.allow is not None else None,
            deny=tuple(deny),
            rename=tuple(rename),
        )
        return self


def _body_templates(
    value: Any, loc: Loc, template: Callable[[Loc, str], Template | None], refs: list[tuple[Loc, Ref]]
) -> None:
    """Parse every string of a body template (to report errors and collect references)."""
    if isinstance(value, str):
        parsed = template(loc, value)
        if parsed is not None:
            refs.extend((loc, ref) for ref in parsed.refs)
    elif isinstance(value, dict):
        for key, child in value.items():
            _body_templates(child, (*loc, str(key)), template, refs)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _body_templates(child, (*loc, index), template, refs)


class AggregateAction(StrictModel):
    """Call several services (in parallel where independent) and answer with one response."""

    calls: dict[str, AggregateCall] = Field(
        min_length=1, description="The calls by name; the name is how other calls and `_meta` refer to it."
    )
    merge: Literal["strict", "namespaced", "deep", "override"] = Field(
        "strict",
        description="How outputs combine: `strict` refuses (at load) two calls that could write the same "
        "top-level key; `namespaced` puts each call without `group` under its name; `deep` merges objects "
        "recursively; `override` lets the later call in this list win a key.",
    )
    deadline: Duration | None = Field(
        None,
        gt=0,
        description="The whole endpoint's time budget; calls still running then count as timed out.",
    )
    forward_headers: list[HeaderName] | None = Field(
        None, description="Client headers copied onto every call; " + FORWARD_DEFAULT
    )
    max_response_bytes: ByteSize = Field(
        8 * 1024 * 1024,
        gt=0,
        description="Largest response body a call may return; a larger one (by its Content-Length, or "
        "as it arrives) fails the call with 502, code `too_large`.",
    )

    _order: tuple[str, ...] = PrivateAttr(())
    _forward = field_validator("forward_headers")(forwardable)

    @field_validator("calls")
    @classmethod
    def _names(cls, value: dict[str, AggregateCall]) -> dict[str, AggregateCall]:
        for name in value:
            if _CALL_NAME.fullmatch(name) is None:
                raise PydanticCustomError(
                    "call_name", "call name '{name}' may use letters, digits and '_' only", {"name": name}
                )
            if name == META_KEY:  # with merge: namespaced, a call's name is its key in the response
                raise PydanticCustomError(
                    "call_name", "call name '_meta' is reserved for the gateway's completion report"
                )
        return value

    @model_validator(mode="after")
    def _graph(self) -> AggregateAction:
        order, problems = check_calls(self.calls, self.merge)
        if problems:
            raise LocatedProblemsError(problems)
        self._order = order
        return self

    @property
    def order(self) -> tuple[str, ...]:
        """Call names in an order where every call comes after its dependencies."""
        return self._order

    def bind(self, pattern: PathPattern) -> list[tuple[Loc, str]]:
        """Check the `{path.x}` references against the route's path pattern."""
        names = pattern.param_names
        problems: list[tuple[Loc, str]] = []
        for call_name, call in self.calls.items():
            for loc, ref in call.facts.located_refs():
                if ref.source == "path" and ref.name not in names:
                    defined = ", ".join(names) or "none"
                    problems.append(
                        (
                            ("calls", call_name, *loc),
                            f"'{{{ref.text}}}': path {pattern.text!r} has no parameter '{ref.name}' "
                            f"(defined: {defined})",
                        )
                    )
        return problems

    def service_refs(self) -> list[tuple[Loc, str]]:
        return [(("calls", name, "service"), call.service) for name, call in self.calls.items()]
