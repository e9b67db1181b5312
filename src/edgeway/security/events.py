"""Change events the security service publishes about its users, for services' local copies.

A service that needs user details (a display name, an e-mail address, the roles) keeps a slim
local copy updated from these events instead of asking the security service on every request
(:class:`edgeway.bus.readcopy.ReadCopy`). ``version`` grows with every change (it is the id of
the change's audit entry), so a copy never lets an older event overwrite a newer one. Secrets
(password hashes) are never published.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeway.bus.events import Event

__all__ = ["USERS_CHANNEL", "UserChanged", "UserDeleted", "user_event"]

USERS_CHANNEL = "users"


class UserChanged(Event):
    """A user was created or changed (roles, attributes, enabled/disabled)."""

    channel = USERS_CHANNEL
    event_type = "security.user.changed.v1"
    key_field = "username"
    username: str
    roles: list[str]
    attributes: dict[str, Any]
    disabled: bool
    version: int


class UserDeleted(Event):
    channel = USERS_CHANNEL
    event_type = "security.user.deleted.v1"
    key_field = "username"
    username: str
    version: int


def user_event(username: str, after: Mapping[str, Any] | None, version: int) -> Event:
    """The event for a user row as it is after a change (``None``: deleted)."""
    if after is None:
        return UserDeleted(username=username, version=version)
    return UserChanged(
        username=username,
        roles=list(after.get("roles") or []),
        attributes=dict(after.get("attributes") or {}),
        disabled=bool(after.get("disabled")),
        version=version,
    )
