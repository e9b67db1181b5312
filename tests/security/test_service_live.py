"""The service run for real (uvicorn on a free port): JWKS client, stale keys, replicas, feeds."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import uvicorn

from conftest import bound_socket, dead_port
from edgeway.security.errors import JwksUnavailable, TokenRevoked, TokenUnknownKey
from edgeway.security.keys import SigningKey
from edgeway.security.policy import PolicyReplica
from edgeway.security.revocation import RevocationFeed
from edgeway.security.tokens import encode_jwt
from edgeway.security.verify import JwksClient, TokenVerifier
from edgeway.security_service import SecuritySettings, create_security_app

from .conftest import ISSUER, service_settings


@contextlib.asynccontextmanager
async def serve(settings: SecuritySettings, sock: socket.socket) -> AsyncIterator[uvicorn.Server]:
    config = uvicorn.Config(create_security_app(settings), log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(200):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield server
    finally:
        server.should_exit = True
        await task


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def password_token(base: str, username: str, password: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post(
            "/oauth/token",
            data={"grant_type": "password", "username": username, "password": password, "client_id": "web"},
        )
        response.raise_for_status()
        return dict(response.json())


async def test_stale_jwks_is_served_while_the_service_is_down(tmp_path: Path) -> None:
    sock = bound_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    jwks = JwksClient(f"{base}/.well-known/jwks.json", start_attempts=1)
    verifier = TokenVerifier(jwks, issuer=ISSUER, audience="shop")
    async with serve(service_settings(tmp_path), sock):
        await jwks.start()
        token = (await password_token(base, "alice", "alice-password"))["access_token"]
    try:
        # The service is gone: a refresh fails, the cached keys keep verifying.
        assert await jwks.refresh(force=True) is False
        assert jwks.stale
        assert "ConnectError" in (jwks.last_error or "")
        verifier.clear_cache()
        assert verifier.verify(token).sub == "alice"
    finally:
        await jwks.stop()


async def test_start_fails_clearly_when_no_jwks_was_ever_fetched() -> None:
    jwks = JwksClient(
        f"http://127.0.0.1:{dead_port()}/.well-known/jwks.json", start_attempts=2, start_backoff=0.01
    )
    with pytest.raises(JwksUnavailable, match="could not fetch the JWKS"):
        await jwks.start()
    await jwks.stop()


async def test_unknown_kid_triggers_one_rate_limited_refresh(tmp_path: Path) -> None:
    sock = bound_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with serve(service_settings(tmp_path), sock):
        jwks = JwksClient(f"{base}/.well-known/jwks.json", min_refresh_interval=60.0)
        verifier = TokenVerifier(jwks, issuer=ISSUER, audience="shop")
        await jwks.start()
        try:
            assert jwks.fetches == 1
            admin = (await password_token(base, "root", "root-password"))["access_token"]
            async with httpx.AsyncClient(base_url=base) as http:
                rotated = await http.post("/admin/keys/rotate", headers={"Authorization": f"Bearer {admin}"})
                assert rotated.status_code == 200
            new_token = (await password_token(base, "alice", "alice-password"))["access_token"]
            # Signed by a key the verifier has not seen: one refresh finds it.
            claims = await verifier.verify_async(new_token)
            assert claims.sub == "alice"
            assert jwks.fetches == 2

            # A flood of tokens with made-up kids does not turn into a flood of fetches.
            stranger = SigningKey.generate()
            forged = encode_jwt(
                stranger, {"iss": ISSUER, "aud": "shop", "sub": "x", "exp": 2**40, "jti": "j"}
            )
            for _ in range(20):
                with pytest.raises(TokenUnknownKey):
                    await verifier.verify_async(forged)
                with pytest.raises(TokenUnknownKey):
                    verifier.verify(forged)
            await asyncio.sleep(0.05)
            assert jwks.fetches == 2
        finally:
            await jwks.stop()


async def test_policy_replica_picks_up_a_policy_change(tmp_path: Path) -> None:
    sock = bound_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with serve(service_settings(tmp_path), sock):
        replica = PolicyReplica(f"{base}/policies", interval=0.1)
        seen: list[int] = []
        replica.on_change(lambda policies: seen.append(policies.version))
        await replica.start()
        try:
            alice = {"sub": "alice", "roles": ["customer"]}
            assert not replica.decide(alice, "reviews:write")
            version = replica.version
            admin = (await password_token(base, "root", "root-password"))["access_token"]
            async with httpx.AsyncClient(base_url=base) as http:
                response = await http.put(
                    "/admin/roles/customer",
                    headers={"Authorization": f"Bearer {admin}"},
                    json={"permissions": ["catalog:read", "orders:create", "reviews:write"]},
                )
                assert response.status_code == 200
            await wait_for(lambda: replica.version > version)
            decision = replica.decide(alice, "reviews:write")
            assert decision.allowed
            assert decision.policy_id == "role:customer"
            assert seen[-1] == replica.version
            updates = replica.updates
            await asyncio.sleep(0.35)  # unchanged document: 304s, no reload
            assert replica.updates == updates
        finally:
            await replica.stop()
    # The service is down now: the replica keeps deciding from its copy.
    assert replica.decide({"sub": "alice", "roles": ["customer"]}, "reviews:write")


async def test_revocation_feed_makes_a_logout_stick_at_the_verifier(tmp_path: Path) -> None:
    sock = bound_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with serve(service_settings(tmp_path), sock):
        jwks = JwksClient(f"{base}/.well-known/jwks.json")
        verifier = TokenVerifier(jwks, issuer=ISSUER, audience="shop")
        feed = RevocationFeed(f"{base}/revocations", verifier.revocations, interval=0.1)
        await jwks.start()
        await feed.start()
        try:
            tokens = await password_token(base, "alice", "alice-password")
            assert verifier.verify(tokens["access_token"]).sub == "alice"
            async with httpx.AsyncClient(base_url=base) as http:
                await http.post("/oauth/revoke", data={"token": tokens["access_token"]})

            def revoked() -> bool:
                try:
                    verifier.verify(tokens["access_token"])
                except TokenRevoked:
                    return True
                return False

            await wait_for(revoked, timeout=3.0)
            assert feed.cursor > 0
        finally:
            await feed.stop()
            await jwks.stop()
