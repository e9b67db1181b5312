"""Login brute force: exponential throttling per account and per IP, then lockout."""

from __future__ import annotations

from pathlib import Path

import httpx

from .conftest import login, running_service, service_settings, token_for


async def test_failed_logins_are_throttled_per_account_and_per_ip(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, throttle_free_attempts=2, throttle_base_delay=30.0)
    async with running_service(settings) as service:
        assert (await login(service, "alice", "guess-1")).status_code == 400
        assert (await login(service, "alice", "guess-2")).status_code == 400
        throttled = await login(service, "alice", "alice-password")
        assert throttled.status_code == 429
        assert 25 <= int(throttled.headers["retry-after"]) <= 30
        assert throttled.json()["type"].endswith("/login-throttled")
        # The same address is slowed for every account, so spraying many users does not help.
        other = await login(service, "sam", "sam-password")
        assert other.status_code == 429
        assert "address" in other.json()["detail"]


async def test_brute_force_ends_in_lockout_even_for_the_right_password(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, throttle_base_delay=0.0, lockout_threshold=3, lockout_duration=600)
    async with running_service(settings) as service:
        assert (await login(service, "alice", "guess-1")).status_code == 400
        assert (await login(service, "alice", "guess-2")).status_code == 400
        third = await login(service, "alice", "guess-3")
        assert third.status_code == 400
        assert "locked" in third.json()["detail"]
        locked = await login(service, "alice", "alice-password")
        assert locked.status_code == 423
        assert locked.headers["content-type"] == "application/problem+json"
        assert 590 <= int(locked.headers["retry-after"]) <= 600
        assert locked.json()["type"].endswith("/account-locked")
        # Other accounts are not locked by it.
        assert (await login(service, "sam", "sam-password")).status_code == 200


async def test_throttle_delay_grows_exponentially(tmp_path: Path) -> None:
    from edgeway.security_service.throttle import LoginThrottle

    settings = service_settings(
        tmp_path, throttle_free_attempts=3, throttle_base_delay=1.0, throttle_max_delay=60
    )
    throttle = LoginThrottle(None, settings)  # type: ignore[arg-type]
    assert [throttle.delay(n) for n in range(1, 10)] == [0, 0, 1, 2, 4, 8, 16, 32, 60]


async def test_admin_unlocks_a_locked_account(tmp_path: Path) -> None:
    settings = service_settings(
        tmp_path, lockout_threshold=2, throttle_free_attempts=10, trust_forwarded_for=True
    )
    async with running_service(settings) as service:
        attacker = {"X-Forwarded-For": "203.0.113.9"}
        form = {"grant_type": "password", "username": "alice", "client_id": "web"}
        for guess in ("a-wrong-one", "another-wrong"):
            await service.post("/oauth/token", data={**form, "password": guess}, headers=attacker)
        assert (await login(service, "alice", "alice-password")).status_code == 423

        admin_token = await token_for(service, "root", "root-password")
        unlock = await service.post(
            "/admin/users/alice/unlock", headers={"Authorization": f"Bearer {admin_token}"}
        )
        assert unlock.status_code == 204
        assert (await login(service, "alice", "alice-password")).status_code == 200
        audit = (await service.get("/admin/audit", headers={"Authorization": f"Bearer {admin_token}"})).json()
        actions = [entry["action"] for entry in audit]
        assert "login.locked" in actions
        assert "user.unlock" in actions


async def test_a_success_resets_the_account_counter(service: httpx.AsyncClient) -> None:
    for _ in range(2):
        assert (await login(service, "alice", "wrong-password")).status_code == 400
    assert (await login(service, "alice", "alice-password")).status_code == 200
    for _ in range(2):
        assert (await login(service, "alice", "wrong-password")).status_code == 400
    assert (await login(service, "alice", "alice-password")).status_code == 200
