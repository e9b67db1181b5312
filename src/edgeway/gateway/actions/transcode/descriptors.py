"""A descriptor set, loaded: its files in a pool of their own, its methods and their HTTP rules.

``protoc --include_imports --descriptor_set_out=api.pb`` (grpcio-tools: ``python -m
grpc_tools.protoc``) writes every file the API needs, dependencies first, so the set builds a
:class:`~google.protobuf.descriptor_pool.DescriptorPool` without the process's generated modules.
The ``google.api.http`` option of each method is read from the set's raw
``MethodDescriptorProto`` (the extension is known once ``google.api.annotations_pb2`` is
imported, which parsing the set needs first).

A path ``package:edgeway.demo.shop/shop.pb`` names a file shipped inside an
installed Python package (found through ``importlib.resources``), so an edge config can point at
a contract's set wherever the package was installed, whatever the gateway's working directory.

Loaded sets are cached by path and modification time: every route naming the same file shares
one pool, and a live reload after the file changed reads it again.
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message

# The `google.api.http` method option (typed by the stubs as a plain field descriptor).
_HTTP: Any = annotations_pb2.http

__all__ = ["DescriptorSet", "DescriptorSetError", "MethodInfo", "load_descriptor_set"]


class DescriptorSetError(Exception):
    """A descriptor set cannot be read, or lacks what the config names."""


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """One method: its names, message classes, which sides stream, and its ``google.api.http``
    rule (if any)."""

    full_name: str  # package.Service.Method
    path: str  # /package.Service/Method, the gRPC request path
    input_type: type[Message]
    output_type: type[Message]
    client_streaming: bool
    server_streaming: bool
    rule: http_pb2.HttpRule | None
    idempotent: bool  # `option idempotency_level` says NO_SIDE_EFFECTS or IDEMPOTENT: safe to repeat

    @property
    def input_descriptor(self) -> Descriptor:
        return cast(Descriptor, self.input_type.DESCRIPTOR)

    @property
    def output_descriptor(self) -> Descriptor:
        return cast(Descriptor, self.output_type.DESCRIPTOR)


class DescriptorSet:
    """The services and methods of one descriptor set file."""

    def __init__(self, source: str, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.source = source
        self.pool = descriptor_pool.DescriptorPool()
        rules: dict[str, http_pb2.HttpRule] = {}
        self.services: list[str] = []
        for file in files.file:
            try:
                self.pool.Add(file)
            except (TypeError, ValueError) as exc:
                raise DescriptorSetError(f"{source}: file {file.name!r} cannot be loaded: {exc}") from None
            prefix = f"{file.package}." if file.package else ""
            for service in file.service:
                self.services.append(prefix + service.name)
                for method in service.method:
                    if method.options.HasExtension(_HTTP):
                        rules[f"{prefix}{service.name}.{method.name}"] = method.options.Extensions[_HTTP]
        self._rules = rules
        self._methods: dict[str, MethodInfo] = {}

    def method(self, name: str) -> MethodInfo:
        """A method by ``package.Service/Method`` or ``package.Service.Method``; KeyError says
        what the set holds."""
        full = name.replace("/", ".").lstrip(".")
        found = self._methods.get(full)
        if found is not None:
            return found
        try:
            descriptor: MethodDescriptor = self.pool.FindMethodByName(full)
        except KeyError:
            known = ", ".join(self.services) or "none"
            raise KeyError(f"no method {name!r} in {self.source} (services: {known})") from None
        service = descriptor.containing_service.full_name
        found = self._methods[full] = MethodInfo(
            full_name=full,
            path=f"/{service}/{descriptor.name}",
            input_type=message_factory.GetMessageClass(descriptor.input_type),
            output_type=message_factory.GetMessageClass(descriptor.output_type),
            client_streaming=bool(getattr(descriptor, "client_streaming", False)),
            server_streaming=bool(getattr(descriptor, "server_streaming", False)),
            rule=self._rules.get(full),
            idempotent=descriptor.GetOptions().idempotency_level in _SAFE,
        )
        return found

    def service_methods(self, service: str) -> list[str]:
        """Full names of the methods of ``service``; KeyError names the set's services."""
        try:
            descriptor = self.pool.FindServiceByName(service)
        except KeyError:
            known = ", ".join(self.services) or "none"
            raise KeyError(f"no service {service!r} in {self.source} (services: {known})") from None
        return [f"{service}.{method.name}" for method in descriptor.methods]

    def annotated(self) -> list[str]:
        """Full names of the methods that carry a ``google.api.http`` rule, in file order."""
        return list(self._rules)


_SAFE = frozenset({descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT})
_CACHE: dict[tuple[str, int, int], DescriptorSet] = {}


PACKAGE_PREFIX = "package:"


def _file(path: str) -> Path:
    if not path.startswith(PACKAGE_PREFIX):
        return Path(path)
    package, slash, name = path.removeprefix(PACKAGE_PREFIX).partition("/")
    if not slash or not package or not name:
        raise DescriptorSetError(
            f"'{path}': write package:<python.package>/<file>, e.g. package:myapi.v1/api.pb"
        )
    try:
        return Path(str(importlib.resources.files(package).joinpath(name)))
    except ModuleNotFoundError:
        raise DescriptorSetError(f"'{path}': no Python package '{package}' is installed") from None


def load_descriptor_set(path: str) -> DescriptorSet:
    """The set in ``path`` (relative paths from the working directory, ``package:pkg/file`` in an
    installed package), cached by mtime."""
    file = _file(path)
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise DescriptorSetError(
            f"descriptor set '{path}' does not exist (relative paths are from the gateway's working "
            f"directory {os.getcwd()}); write it with protoc --include_imports --descriptor_set_out"
        ) from None
    except OSError as exc:
        raise DescriptorSetError(f"cannot read descriptor set '{path}': {exc.strerror or exc}") from None
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    found = _CACHE.get(key)
    if found is not None:
        return found
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise DescriptorSetError(f"cannot read descriptor set '{path}': {exc.strerror or exc}") from None
    files = descriptor_pb2.FileDescriptorSet()
    try:
        files.ParseFromString(data)
    except DecodeError:
        raise DescriptorSetError(
            f"'{path}' is not a descriptor set (a FileDescriptorSet from protoc --descriptor_set_out)"
        ) from None
    if not files.file:
        raise DescriptorSetError(f"descriptor set '{path}' holds no files")
    loaded = _CACHE[key] = DescriptorSet(path, files)
    return loaded


def field_names(descriptor: Descriptor) -> dict[str, Any]:
    """Fields by proto name and by JSON name (what a path variable or a query key may use)."""
    out: dict[str, Any] = {}
    for field in descriptor.fields:
        out[field.name] = field
        out[field.json_name] = field
    return out
