"""Feature flags, evaluated locally from rules kept in NATS KV and updated live.

A flag is a key ``<prefix><name>`` (default prefix ``flags.``) in a config bucket whose value is
either a bare boolean or a rule object::

    nats kv put cfg flags.new-checkout '{"enabled": true, "percentage": 25, "roles": ["beta"]}'

========== ====================================================================================
field      meaning
========== ====================================================================================
enabled    master switch; ``false`` turns the flag off for everybody (default ``true``)
roles      callers holding any of these roles get the flag, whatever the percentage
percentage 0 to 100: the share of keys that get it, chosen by a stable hash of (flag, key)
========== ====================================================================================

Evaluation: off when the flag is unknown or disabled; on for a matching role; then, when a
percentage is set, on for keys whose hash bucket falls below it (no key → off); then, when roles
were listed but none matched and no percentage is set, off; otherwise on.

The hash is SHA-256 of ``"<flag>:<key>"`` — not Python's ``hash()``, which changes per process —
so every instance of every service puts the same user in the same bucket, and raising the
percentage only ever adds users.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeway.service.config_store import ConfigStore

__all__ = ["FlagRule", "Flags", "bucket_of"]

_log = logging.getLogger("edgeway.service.flags")
_BUCKETS = 10_000  # 0.01 % resolution


@dataclass(frozen=True, slots=True)
class FlagRule:
    enabled: bool = True
    percentage: float | None = None
    roles: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, name: str, value: Any) -> FlagRule:
        if isinstance(value, bool):
            return cls(enabled=value)
        if not isinstance(value, Mapping):
            raise ValueError(f"flag {name!r}: expected true/false or an object, got {value!r}")
        unknown = set(value) - {"enabled", "percentage", "roles", "description"}
        if unknown:
            raise ValueError(f"flag {name!r}: unknown field(s) {sorted(unknown)}")
        enabled = value.get("enabled", True)
        percentage = value.get("percentage")
        roles = value.get("roles", [])
        if not isinstance(enabled, bool):
            raise ValueError(f"flag {name!r}: enabled must be true or false")
        if percentage is not None and (
            isinstance(percentage, bool)
            or not isinstance(percentage, int | float)
            or not 0 <= percentage <= 100
        ):
            raise ValueError(f"flag {name!r}: percentage must be a number from 0 to 100")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise ValueError(f"flag {name!r}: roles must be a list of strings")
        return cls(enabled, None if percentage is None else float(percentage), frozenset(roles))

    def evaluate(self, name: str, key: str | None, roles: Iterable[str]) -> bool:
        if not self.enabled:
            return False
        if self.roles and not self.roles.isdisjoint(roles):
            return True
        if self.percentage is not None:
            return key is not None and bucket_of(name, key) < self.percentage * (_BUCKETS / 100)
        return not self.roles


def bucket_of(flag: str, key: str) -> int:
    """The stable bucket (0 ≤ n < 10,000) of a key for a flag."""
    digest = hashlib.sha256(f"{flag}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % _BUCKETS


class Flags:
    """Flags read from a :class:`ConfigStore` (or a plain mapping), kept current by its watch."""

    def __init__(self, source: ConfigStore | Mapping[str, Any], *, prefix: str = "flags.") -> None:
        self.prefix = prefix
        self._rules: dict[str, FlagRule] = {}
        if isinstance(source, ConfigStore):
            initial: Mapping[str, Any] = source.snapshot()
            self._unsubscribe = source.subscribe(self._on_change)
        else:
            initial = source
            self._unsubscribe = lambda: None
        for key, value in initial.items():
            self._on_change(key, value)

    def enabled(
        self, name: str, *, key: str | None = None, roles: Iterable[str] = (), default: bool = False
    ) -> bool:
        """Whether flag ``name`` is on for this key (a user or tenant id) and these roles."""
        rule = self._rules.get(name)
        if rule is None:
            return default
        return rule.evaluate(name, key, roles)

    def rules(self) -> dict[str, FlagRule]:
        return dict(self._rules)

    def close(self) -> None:
        self._unsubscribe()

    def _on_change(self, key: str, value: Any) -> None:
        # Called by the config store, possibly before start() returns; must not raise.
        if not key.startswith(self.prefix):
            return
        name = key[len(self.prefix) :]
        if value is None:
            self._rules.pop(name, None)
            return
        try:
            self._rules[name] = FlagRule.parse(name, value)
        except ValueError as exc:
            # Keep the last good rule: a typo in the store must not flip a flag in production.
            _log.error("ignoring invalid flag rule: %s", exc)
