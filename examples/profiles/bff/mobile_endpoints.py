"""Python endpoints of the mobile BFF: composition that YAML should not express."""

from __future__ import annotations

from typing import Any

from edgeway.bff import Rejection, Request, endpoint

REGIONS = ("eu", "us")


@endpoint("GET", "/m/products/{id}/delivery")
async def delivery_estimate(req: Request) -> dict[str, Any]:
    """When would this product arrive? Ship from a warehouse in the customer's region when one
    has stock, from abroad otherwise."""
    region = req.query.get("region", "eu")
    if region not in REGIONS:
        raise Rejection(400, "Bad Request", f"region must be one of {', '.join(REGIONS)}", region=region)
    stock = (await req.services.inventory.get(f"/stock/{req.path_params['id']}")).raise_for_status().json()
    stocked = [w for w in stock["warehouses"] if w["quantity"] > 0]
    if not stock["available"] or not stocked:
        return {"available": False}
    local = [w for w in stocked if w["region"] == region]
    chosen = (local or stocked)[0]
    days = req.options["days_in_region"] if local else req.options["days_abroad"]
    return {"available": True, "ships_from": chosen["id"], "days": days}
