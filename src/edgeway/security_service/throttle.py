"""Login throttling and lockout.

Each failed attempt is counted per user (or client) and per client IP. After
``throttle_free_attempts`` failures, the next attempt must wait ``base * 2**(n - free)`` seconds
(capped), answered with 429 and ``Retry-After``; an IP spraying many accounts is slowed the
same way. After ``lockout_threshold`` failures an account is locked for ``lockout_duration``
(423), until it expires or an admin unlocks it. A success clears the account's counter, not the
IP's: one valid account must not reset an attacker's budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from edgeway.security_service.problems import problem
from edgeway.security_service.settings import SecuritySettings
from edgeway.security_service.store import SecurityStore


class LoginThrottle:
    def __init__(self, store: SecurityStore, settings: SecuritySettings) -> None:
        self.store = store
        self.settings = settings

    def delay(self, failures: int) -> float:
        over = failures - self.settings.throttle_free_attempts
        if over < 0:
            return 0.0
        return float(min(self.settings.throttle_base_delay * 2**over, self.settings.throttle_max_delay))

    async def check(self, keys: Sequence[str], now: float | None = None) -> None:
        """Raise 423 if an account is locked, 429 if it must wait; return when the attempt may go on."""
        at = time.time() if now is None else now
        for key, attempts in (await self.store.attempts(keys)).items():
            if attempts.locked_until is not None and attempts.locked_until > at:
                wait = math.ceil(attempts.locked_until - at)
                raise problem(
                    423,
                    "Account Locked",
                    f"too many failed logins; try again in {wait} s or ask an administrator to unlock it",
                    kind="account-locked",
                    headers={"Retry-After": str(wait)},
                    error="access_denied",
                    error_description="account locked",
                )
            if at - attempts.last_failure > self.settings.throttle_window:
                continue
            wait_for = attempts.last_failure + self.delay(attempts.failures) - at
            if wait_for > 0:
                wait = math.ceil(wait_for)
                what = "from this address" if key.startswith("ip:") else "for this account"
                raise problem(
                    429,
                    "Too Many Attempts",
                    f"too many failed logins {what}; retry after {wait} s",
                    kind="login-throttled",
                    headers={"Retry-After": str(wait)},
                    error="slow_down",
                    error_description="too many failed attempts",
                )

    async def failed(self, account_key: str, ip_key: str | None, now: float | None = None) -> bool:
        """Count a failure; True when it locked the account."""
        at = time.time() if now is None else now
        window = self.settings.throttle_window
        if ip_key is not None:
            await self.store.record_failure(ip_key, at, window)
        attempts = await self.store.record_failure(account_key, at, window)
        if attempts.failures >= self.settings.lockout_threshold:
            await self.store.lock(account_key, at + self.settings.lockout_duration)
            await self.store.audit(
                "system",
                "login.locked",
                account_key,
                None,
                {"failures": attempts.failures, "until": at + self.settings.lockout_duration},
            )
            return True
        return False

    async def succeeded(self, account_key: str) -> None:
        await self.store.reset_attempts(account_key)
