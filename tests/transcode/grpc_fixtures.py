"""A real grpcio server for the transcoding tests, built from a descriptor set compiled here.

``compile_descriptor_set`` runs grpcio-tools' protoc on ``protos/shelves.proto`` with
``--include_imports`` (the google/api annotations come from googleapis-common-protos, the
well-known types from grpcio-tools), so the tests read exactly what a user's build writes. The
server registers generic handlers whose messages come from the same set: no generated code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
from google.api import annotations_pb2
from google.protobuf.message import Message

from edgeway.gateway.actions.transcode.descriptors import DescriptorSet, MethodInfo, load_descriptor_set

PROTOS = Path(__file__).parent / "protos"


@functools.cache
def shelves_descriptor_set() -> Path:
    """The tests' descriptor set, compiled once per test process."""
    return compile_descriptor_set(Path(tempfile.mkdtemp(prefix="edgeway-protos-")))


def compile_descriptor_set(out: Path, proto: str = "shelves.proto", include: Path = PROTOS) -> Path:
    from grpc_tools import protoc

    target = out / f"{Path(proto).stem}.pb"
    googleapis = Path(annotations_pb2.__file__).parents[2]
    wkt = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "protoc",
            f"-I{include}",
            f"-I{googleapis}",
            f"-I{wkt}",
            "--include_imports",
            f"--descriptor_set_out={target}",
            str(include / proto),
        ]
    )
    assert code == 0, f"protoc failed ({code})"
    return target


Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]
# A streaming method's: an async generator for a streamed answer, a coroutine for a streamed request.
StreamHandler = Callable[
    [Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Message] | Awaitable[Message]
]


@dataclass
class ShelvesServer:
    """Serves ``shelves.v1.Shelves`` with the handlers given; records the metadata of calls."""

    descriptors: DescriptorSet
    handlers: dict[str, Handler | StreamHandler]
    port: int = 0
    metadata: list[dict[str, str]] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)  # messages of classes made at run time
    server: grpc.aio.Server | None = None

    async def start(self) -> None:
        server = grpc.aio.server()
        methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for name, handler in self.handlers.items():
            info = self.descriptors.method(f"shelves.v1.Shelves/{name}")

            def wrap(
                h: Handler,
            ) -> Callable[[Message, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]:
                async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
                    self.metadata.append(
                        {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
                    )
                    self.requests.append(request)
                    return await h(request, context)

                return run

            if info.client_streaming or info.server_streaming:
                methods[name] = self._streaming(info, handler)
                continue
            methods[name] = grpc.unary_unary_rpc_method_handler(
                wrap(cast(Handler, handler)),
                request_deserializer=info.input_type.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("shelves.v1.Shelves", methods),)
        )
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.server = server

    def _streaming(self, info: MethodInfo, handler: StreamHandler) -> grpc.RpcMethodHandler[Any, Any]:
        """A streaming method's handler as the test wrote it: an async generator for a streamed
        response, a coroutine taking the request iterator for a streamed request."""

        def serialize(m: Message) -> bytes:
            return m.SerializeToString()

        if not info.client_streaming:
            make: Any = grpc.unary_stream_rpc_method_handler
        elif info.server_streaming:
            make = grpc.stream_stream_rpc_method_handler
        else:
            make = grpc.stream_unary_rpc_method_handler
        return make(  # type: ignore[no-any-return]
            handler, request_deserializer=info.input_type.FromString, response_serializer=serialize
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)


@contextlib.asynccontextmanager
async def shelves_server(
    descriptor_set: Path, **handlers: Handler | StreamHandler
) -> AsyncIterator[ShelvesServer]:
    server = ShelvesServer(load_descriptor_set(str(descriptor_set)), handlers)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def message(server: ShelvesServer, name: str, **values: Any) -> Message:
    """A message of the set by its short name in ``shelves.v1``."""
    from google.protobuf import json_format, message_factory

    cls = message_factory.GetMessageClass(server.descriptors.pool.FindMessageTypeByName(f"shelves.v1.{name}"))
    out = cls()
    json_format.ParseDict(values, out)
    return out


async def sleep_ms(millis: int) -> None:
    await asyncio.sleep(millis / 1000)
