"""Config of the transcoding action (``transcode`` on a route), and of the gRPC target of an
aggregate call (``grpc`` on a call): a descriptor set and the methods in it.

The descriptor set is read when the config is checked, so ``edgeway config check`` reports a
missing file, a method or service the set does not hold, a method without ``google.api.http``
rules, a path variable that names no field, a client-streaming rule without a body or a
streaming method as an aggregate's call, each at its key. Nothing of
protobuf is imported until a config uses one of these blocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, PrivateAttr, field_validator, model_validator

from edgeway.gateway.config.base import HeaderName, LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.units import Duration
from edgeway.gateway.upstream.config import FORWARD_DEFAULT, forwardable

if TYPE_CHECKING:
    from edgeway.gateway.actions.transcode.descriptors import DescriptorSet, MethodInfo
    from edgeway.gateway.actions.transcode.framing import StreamFormat
    from edgeway.gateway.actions.transcode.http_rule import Binding
    from edgeway.gateway.actions.transcode.messages import JsonOptions
    from edgeway.gateway.config.patterns import PathPattern


class PrintOptions(StrictModel):
    """How answers print (the proto3 JSON mapping's options, as Envoy's transcoder names them)."""

    preserve_proto_field_names: bool = Field(
        False, description="Keys are the `.proto` field names (`shelf_id`), not their JSON names (`shelfId`)."
    )
    always_print_primitive_fields: bool = Field(
        False,
        description="Print fields that hold their default value (0, '', false, []) instead of "
        "leaving them out.",
    )
    always_print_enums_as_ints: bool = Field(False, description="Enums as their numbers, not their names.")
    int64_as_numbers: bool = Field(
        False,
        description="64-bit integers as JSON numbers, not the strings proto3 JSON prints them as "
        "(what a JSON service answers for the same value; exact up to 2^53 in JavaScript).",
    )

    def json_options(self, *, ignore_unknown_query_parameters: bool = False) -> JsonOptions:
        from edgeway.gateway.actions.transcode.messages import JsonOptions

        return JsonOptions(
            preserve_proto_field_names=self.preserve_proto_field_names,
            always_print_primitive_fields=self.always_print_primitive_fields,
            always_print_enums_as_ints=self.always_print_enums_as_ints,
            int64_as_numbers=self.int64_as_numbers,
            ignore_unknown_query_parameters=ignore_unknown_query_parameters,
        )


class TranscodePrintOptions(PrintOptions):
    """A route's print options: the answer's options, and how a server-streaming answer is framed."""

    stream_newline_delimited: bool = Field(
        False,
        description="A server-streaming method's messages are answered one JSON object per line "
        "(NDJSON, `application/x-ndjson`) instead of as one JSON array.",
    )
    stream_sse_style_delimited: bool = Field(
        False,
        description="A server-streaming method's messages are answered as Server-Sent Events "
        "(`data: {...}`, `text/event-stream`) instead of as one JSON array.",
    )

    @model_validator(mode="after")
    def _one_framing(self) -> TranscodePrintOptions:
        if self.stream_newline_delimited and self.stream_sse_style_delimited:
            raise ValueError("set either stream_newline_delimited or stream_sse_style_delimited, not both")
        return self

    @property
    def stream_format(self) -> StreamFormat:
        if self.stream_newline_delimited:
            return "ndjson"
        return "sse" if self.stream_sse_style_delimited else "array"


def _method_name(value: str) -> str:
    text = value.replace("/", ".").strip(".")
    if "." not in text or any(not part for part in text.split(".")):
        raise ValueError(f"method '{value}' must be its full name, 'package.Service/Method'")
    return value


class GrpcMethodRef(StrictModel):
    """A gRPC method in a descriptor set."""

    descriptor_set: str = Field(
        description="A `FileDescriptorSet` written by `protoc --include_imports --descriptor_set_out` "
        "(relative paths are from the gateway's working directory)."
    )
    method: str = Field(description="The method's full name, `package.Service/Method`.")
    print_options: PrintOptions = Field(
        default_factory=PrintOptions,
        description="How the answer prints before shaping (`always_print_primitive_fields`: a 0 "
        "stays a key that `allow` keeps, instead of no key).",
    )

    _method: MethodInfo | None = PrivateAttr(None)

    @field_validator("method")
    @classmethod
    def _method_form(cls, value: str) -> str:
        return _method_name(value)

    @model_validator(mode="after")
    def _load(self) -> GrpcMethodRef:
        loaded, problems = _load_set(self.descriptor_set)
        if loaded is not None:
            found, problem = _method(loaded, self.method)
            if found is not None and (found.client_streaming or found.server_streaming):
                found = None
                problem = (
                    f"{self.method} is a streaming method; a call of an aggregate needs one answer, "
                    "so its method must be unary (serve a streaming method with a `transcode` route)"
                )
            if problem is not None:
                problems.append((("method",), problem))
            self._method = found
        if problems:
            raise LocatedProblemsError(problems)
        return self

    @property
    def info(self) -> MethodInfo:
        assert self._method is not None  # set by validation
        return self._method

    def json_options(self) -> JsonOptions:
        return self.print_options.json_options()


class TranscodeAction(StrictModel):
    """Answer JSON requests by calling a gRPC method of a service (JSON-to-gRPC transcoding)."""

    service: str = Field(description="Name of a service under `services` whose instances serve gRPC.")
    descriptor_set: str = Field(
        description="A `FileDescriptorSet` written by `protoc --include_imports --descriptor_set_out` "
        "(relative paths are from the gateway's working directory)."
    )
    method: str | None = Field(
        None,
        description="Call this method (`package.Service/Method`) for every request the route takes, "
        "without `google.api.http` rules: the JSON body is the request message, the route's path "
        "parameters and the query parameters set fields by name. Absent: the methods' rules decide.",
    )
    services: list[str] | None = Field(
        None,
        description="With no `method`: the gRPC services (`package.Service`) whose annotated methods "
        "this route serves; absent: every annotated method in the set.",
    )
    print_options: TranscodePrintOptions = Field(
        default_factory=TranscodePrintOptions, description="How answers print."
    )
    ignore_unknown_query_parameters: bool = Field(
        False, description="A query parameter that names no field is ignored instead of answered with 400."
    )
    timeout: Duration | None = Field(
        None,
        gt=0,
        description="The call's deadline (sent as `grpc-timeout`); absent: the service's `timeouts.total`.",
    )
    forward_headers: list[HeaderName] | None = Field(
        None, description="Client headers sent as gRPC metadata; " + FORWARD_DEFAULT
    )
    max_stream_messages: int = Field(
        10_000,
        gt=0,
        description="A client-streaming (or bidirectional) method's request body is a JSON array of "
        "messages; more elements than this are refused with 413 before anything is sent (the "
        "body's size is bounded by `limits.max_body_bytes`).",
    )

    _forward = field_validator("forward_headers")(forwardable)
    _set: DescriptorSet | None = PrivateAttr(None)
    _bindings: list[tuple[MethodInfo, Binding]] = PrivateAttr(default_factory=list)
    _direct: MethodInfo | None = PrivateAttr(None)

    @field_validator("method")
    @classmethod
    def _method_form(cls, value: str | None) -> str | None:
        return None if value is None else _method_name(value)

    @model_validator(mode="after")
    def _load(self) -> TranscodeAction:
        loaded, problems = _load_set(self.descriptor_set)
        if loaded is not None:
            self._set = loaded
            if self.method is not None:
                if self.services is not None:
                    problems.append((("services",), "set either `method` or `services`, not both"))
                found, problem = _method(loaded, self.method)
                if problem is not None:
                    problems.append((("method",), problem))
                self._direct = found
            else:
                problems += self._collect(loaded)
        if problems:
            raise LocatedProblemsError(problems)
        return self

    def _collect(self, loaded: DescriptorSet) -> list[tuple[Loc, str]]:
        from edgeway.gateway.actions.transcode.http_rule import TemplateError
        from edgeway.gateway.actions.transcode.rules import bindings_of

        problems: list[tuple[Loc, str]] = []
        names: list[tuple[Loc, str]] = []
        if self.services is None:
            names = [(("descriptor_set",), name) for name in loaded.annotated()]
            if not names:
                problems.append(
                    (
                        ("descriptor_set",),
                        f"no method in {self.descriptor_set} has a google.api.http rule; annotate "
                        "the methods, or name one with `method`",
                    )
                )
        for index, service in enumerate(self.services or ()):
            try:
                methods = loaded.service_methods(service)
            except KeyError as exc:
                problems.append((("services", index), str(exc.args[0])))
                continue
            annotated = [m for m in methods if m in loaded.annotated()]
            if not annotated:
                problems.append(
                    (
                        ("services", index),
                        f"no method of {service} has a google.api.http rule; annotate them, or name "
                        "one with `method`",
                    )
                )
            names += [(("services", index), m) for m in annotated]
        for loc, name in names:
            info, problem = _method(loaded, name)
            if problem is not None or info is None:
                problems.append((loc, problem or name))
                continue
            try:
                for binding in bindings_of(info):
                    if info.client_streaming and binding.body is None:
                        problems.append(
                            (
                                loc,
                                f"{name} streams its requests, which come from the body (a JSON "
                                f"array): its rule {binding.method} {binding.template.text} needs a "
                                "`body`",
                            )
                        )
                    self._bindings.append((info, binding))
            except TemplateError as exc:
                problems.append((loc, f"{name}: {exc}"))
        return problems

    @property
    def descriptors(self) -> DescriptorSet:
        assert self._set is not None  # set by validation
        return self._set

    @property
    def bindings(self) -> list[tuple[MethodInfo, Binding]]:
        """The annotated methods' bindings, most specific template first."""
        return self._bindings

    @property
    def direct(self) -> MethodInfo | None:
        return self._direct

    def json_options(self) -> JsonOptions:
        return self.print_options.json_options(
            ignore_unknown_query_parameters=self.ignore_unknown_query_parameters
        )

    def bind(self, pattern: PathPattern) -> list[tuple[Loc, str]]:
        """A direct method: each of the route's path parameters must name a field."""
        from edgeway.gateway.actions.transcode.messages import check_field_path

        if self._direct is None:
            return []
        return [
            (("method",), f"path parameter '{{{name}}}': {problem}")
            for name in pattern.param_names
            if (problem := check_field_path(self._direct.input_descriptor, tuple(name.split("."))))
            is not None
        ]

    def service_refs(self) -> list[tuple[Loc, str]]:
        return [(("service",), self.service)]


def _load_set(path: str) -> tuple[DescriptorSet | None, list[tuple[Loc, str]]]:
    try:
        from edgeway.gateway.actions.transcode.descriptors import DescriptorSetError, load_descriptor_set
    except ImportError as exc:  # grpcio/protobuf are the `grpc` extra
        return None, [
            (
                ("descriptor_set",),
                f"transcoding needs grpcio and protobuf (pip install 'edgeway[grpc]'): {exc}",
            )
        ]
    try:
        return load_descriptor_set(path), []
    except DescriptorSetError as exc:
        return None, [(("descriptor_set",), str(exc))]


def _method(loaded: DescriptorSet, name: str) -> tuple[MethodInfo | None, str | None]:
    try:
        return loaded.method(name), None
    except KeyError as exc:
        return None, str(exc.args[0])
