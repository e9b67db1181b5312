"""A service's own access token (OAuth client credentials), for calls no user is behind.

The order saga keeps going after the customer's request has ended (and after a restart), so it
cannot borrow the customer's token: the orders service calls inventory and payments as itself,
with the ``service`` role the security service gives its ``orders-service`` client. The token is
fetched once and reused until shortly before it expires.
"""

from __future__ import annotations

import asyncio
import time

import httpx

__all__ = ["ClientCredentials", "TokenUnavailableError"]


class TokenUnavailableError(Exception):
    """The security service did not issue a token (unreachable, or wrong client credentials)."""


class ClientCredentials:
    def __init__(
        self,
        token_url: str,
        client_id: str,
        secret: str,
        *,
        scope: str | None = None,
        refresh_margin: float = 60.0,
        timeout: float = 5.0,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = secret
        self.scope = scope
        self.refresh_margin = refresh_margin
        self._http = httpx.AsyncClient(timeout=timeout)
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def authorization(self) -> dict[str, str]:
        """``{"Authorization": "Bearer ..."}`` with a token valid for at least the margin."""
        return {"Authorization": f"Bearer {await self.token()}"}

    async def token(self) -> str:
        if self._token is not None and time.time() < self._expires_at - self.refresh_margin:
            return self._token
        async with self._lock:
            if self._token is None or time.time() >= self._expires_at - self.refresh_margin:
                await self._fetch()
        assert self._token is not None  # _fetch sets it or raises
        return self._token

    async def _fetch(self) -> None:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        try:
            response = await self._http.post(self.token_url, data=form, auth=(self.client_id, self._secret))
        except httpx.HTTPError as exc:
            raise TokenUnavailableError(f"cannot reach {self.token_url}: {exc}") from exc
        if response.status_code != 200:
            raise TokenUnavailableError(
                f"{self.token_url} refused client {self.client_id}: "
                f"{response.status_code} {response.text[:200]}"
            )
        body = response.json()
        self._token = str(body["access_token"])
        self._expires_at = time.time() + float(body.get("expires_in", 300))

    def forget(self) -> None:
        """Drop the cached token (after a 401: it may have been revoked)."""
        self._token = None

    async def aclose(self) -> None:
        await self._http.aclose()
