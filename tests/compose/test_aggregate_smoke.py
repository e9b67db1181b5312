from __future__ import annotations

from compose_helpers import aggregate_config, gateway, request, services


async def test_smoke() -> None:
    async with services(users=lambda s: {"user": {"id": 1}}, orders=lambda s: {"orders": [1, 2]}) as svc:
        cfg = aggregate_config(
            svc,
            {
                "calls": {
                    "u": {"service": "users", "path": "/u", "allow": ["user"]},
                    "o": {"service": "orders", "path": "/o", "group": "x"},
                }
            },
        )
        async with gateway(cfg) as (port, _log):
            answer = await request(port, "GET", "/screen")
            print(answer)
            assert answer.status == 200
            assert answer.json() == {"user": {"id": 1}, "x": {"orders": [1, 2]}}
