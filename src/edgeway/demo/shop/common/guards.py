"""Role guards the shop needs beyond the kit's ``require_roles`` (which wants every listed role)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeway.service import Caller, Identity
from edgeway.service.errors import PermissionDeniedError

__all__ = ["STAFF", "require_any_role", "sees_everything"]

STAFF = frozenset({"support", "admin"})


def require_any_role(*roles: str) -> Callable[..., Any]:
    """A dependency passing callers that hold at least one of ``roles``, else 403."""
    wanted = frozenset(roles)

    async def dependency(caller: Caller) -> Identity:
        if wanted.isdisjoint(caller.roles):
            raise PermissionDeniedError(f"needs one of the roles: {', '.join(sorted(wanted))}")
        return caller

    return dependency


def sees_everything(caller: Identity) -> bool:
    """Support and admin staff see every customer's data; customers only their own."""
    return not STAFF.isdisjoint(caller.roles)
