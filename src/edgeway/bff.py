"""What a Python endpoint module imports: ``from edgeway.bff import endpoint, Response``.

A small, stable facade over the gateway's endpoint machinery (see docs/aggregation.md, "Python
endpoints")::

    from edgeway.bff import Rejection, Response, endpoint

    @endpoint("GET", "/home")
    async def home(req):
        profile = (await req.services.profile.get("/me")).raise_for_status().json()
        return {"name": profile["name"]}

A service's gRPC methods are called the same way, JSON in and out::

    page = await req.services["catalog-grpc"].grpc(
        "shop.catalog.v1.Catalog/ListProducts", {"limit": 20}, descriptor_set="package:shop/shop.pb"
    )
"""

from edgeway.gateway.actions.endpoints.clients import (
    ServiceCallError,
    ServiceClient,
    ServiceResponse,
    Services,
    ServiceStatusError,
)
from edgeway.gateway.actions.endpoints.grpc_calls import GrpcMethodError, PrintOptions
from edgeway.gateway.actions.endpoints.registry import endpoint
from edgeway.gateway.actions.endpoints.request import Request, Response
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import Identity

__all__ = [
    "GrpcMethodError",
    "Identity",
    "PrintOptions",
    "Rejection",
    "Request",
    "Response",
    "ServiceCallError",
    "ServiceClient",
    "ServiceResponse",
    "ServiceStatusError",
    "Services",
    "endpoint",
]
