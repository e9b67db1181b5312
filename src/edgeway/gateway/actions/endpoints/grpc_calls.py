"""gRPC methods called from a Python endpoint: ``await req.services["catalog-grpc"].grpc(...)``.

A method is called the way an aggregate's ``grpc`` call is (:class:`~edgeway.gateway.actions.
transcode.pending.GrpcCaller`): the gateway's gRPC channels, the service's instances, breakers,
retries of idempotent methods and timeouts, JSON in (the proto3 JSON mapping) and JSON out
(``print_options``), and an error status answered as the HTTP status it stands for with a
problem body. Nothing of grpcio or protobuf is imported until an endpoint calls a method.

What is worked out per method (its descriptor, the JSON options, the service's timeout) is
kept per gateway, so the calls after the first cost what an aggregate's call costs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from edgeway.gateway.actions.transcode.config import PrintOptions
from edgeway.gateway.upstream.call import CallLimits
from edgeway.gateway.upstream.clusters import Cluster, Endpoint
from edgeway.resilience.guard import ServiceGuard

if TYPE_CHECKING:
    from edgeway.gateway.actions.transcode.invoker import GrpcChannels
    from edgeway.gateway.actions.transcode.pending import GrpcCaller
    from edgeway.gateway.telemetry.meters import ServiceMeter

__all__ = ["GrpcMethodError", "GrpcMethods", "PrintOptions"]

# Methods kept per gateway: endpoint code names a handful; a name built from requests would not
# grow the table without bound.
_MAX_KEPT = 256


class GrpcMethodError(LookupError):
    """The method cannot be called as named: no such descriptor set, no such method in it, a
    streaming method, or grpcio not installed. The endpoint's code is wrong, not the request."""


class GrpcMethods:
    """The gateway's gRPC channels (opened on the first call) and the methods endpoints called."""

    __slots__ = ("_callers", "_channels", "_open")

    def __init__(self, open_channels: Callable[[], GrpcChannels]) -> None:
        self._open = open_channels
        self._channels: GrpcChannels | None = None
        self._callers: dict[tuple[str, str, str, tuple[bool, ...], float], GrpcCaller] = {}

    def caller(
        self,
        cluster: Cluster,
        guard: ServiceGuard[Endpoint] | None,
        method: str,
        descriptor_set: str,
        print_options: PrintOptions | Mapping[str, bool] | None,
        timeout: float | None,
        meter: ServiceMeter | None,
    ) -> GrpcCaller:
        """The compiled call of ``method`` on ``cluster``; :class:`GrpcMethodError` when it has
        none, ValueError for print options that are not :class:`PrintOptions`' keys."""
        options = _print_options(print_options)
        total = CallLimits.of(cluster, timeout).total
        key = (cluster.name, descriptor_set, method, tuple(options.model_dump().values()), total)
        found = self._callers.get(key)
        if found is None:
            found = self._compile(cluster, guard, method, descriptor_set, options, total, meter)
            if len(self._callers) < _MAX_KEPT:
                self._callers[key] = found
        return found

    def _compile(
        self,
        cluster: Cluster,
        guard: ServiceGuard[Endpoint] | None,
        method: str,
        descriptor_set: str,
        options: PrintOptions,
        total: float,
        meter: ServiceMeter | None,
    ) -> GrpcCaller:
        try:  # grpcio and protobuf are the `grpc` extra
            from edgeway.gateway.actions.transcode.descriptors import DescriptorSetError, load_descriptor_set
            from edgeway.gateway.actions.transcode.pending import GrpcCaller
        except ImportError as exc:
            needs = "gRPC calls need grpcio and protobuf (pip install 'edgeway[grpc]')"
            raise GrpcMethodError(f"{needs}: {exc}") from None
        try:
            info = load_descriptor_set(descriptor_set).method(method)
        except DescriptorSetError as exc:
            raise GrpcMethodError(str(exc)) from None
        except KeyError as exc:
            raise GrpcMethodError(str(exc.args[0])) from None
        if info.client_streaming or info.server_streaming:
            raise GrpcMethodError(
                f"{method} is a streaming method; an endpoint's call needs one answer (serve it "
                "with a `transcode` route)"
            )
        if self._channels is None:
            self._channels = self._open()
        return GrpcCaller(
            channels=self._channels,
            cluster=cluster,
            guard=guard,
            info=info,
            timeout=total,
            options=options.json_options(),
            input_from_client=False,
            meter=meter,
        )


def _print_options(given: PrintOptions | Mapping[str, bool] | None) -> PrintOptions:
    if given is None:
        return _DEFAULT
    if isinstance(given, PrintOptions):
        return given
    return PrintOptions.model_validate(dict(given))  # a ValidationError is a ValueError


_DEFAULT = PrintOptions()
