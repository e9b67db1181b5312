"""``edgeway demo compare`` against a rate-limited edge: it waits out each 429's Retry-After like a
well-mannered client and reports the throttling, instead of counting the limit as errors (the
demo's partner gateway limits each partner to 20 requests/s, bursts of 40; 100 loads are more)."""

from __future__ import annotations

from pathlib import Path

from edgeway.demo.compare import Call, Screen, measure, results_table, retry_after_seconds
from live_gateway import backends, ports, service, serving, write


async def test_a_rate_limited_edge_is_measured_at_the_pace_it_allows_without_errors(tmp_path: Path) -> None:
    port, admin = ports()
    async with backends("catalog") as started:
        config = {
            "name": "limited",
            "listen": {"port": port},
            "admin": {"port": admin},
            "access_log": {"enabled": False},
            "reload": {"watch": False},
            "services": {"catalog": service(started["catalog"])},
            "routes": [
                {
                    "match": {"path": "/v1/**"},
                    "proxy": {"service": "catalog"},
                    # Well under what a loaded CI machine serves, so the limit is met whatever the pace.
                    "rate_limit": {"rate": 10, "per": "1s", "burst": 2, "key": "ip"},
                }
            ],
        }
        write(tmp_path / "gateway.yaml", config)
        async with serving(tmp_path / "gateway.yaml"):
            screen = Screen("gateway", "product", (Call((f"http://127.0.0.1:{port}/v1/products/POT-01",)),))
            [result] = await measure([screen], {}, loads=20, concurrency=4)
    summary = result.summary()
    assert summary["errors"] == 0, summary["first_error"]
    assert summary["loads"] == 20
    assert summary["throttled"] > 0  # the limit was met, and waited out
    assert result.statuses == {200: 20}
    assert started["catalog"].requests == 2 + 20  # warm-up and loads; a refused one never got there
    assert "429 waited" in [c.header for c in results_table([summary], "t").columns]


def test_retry_after_is_read_as_seconds_and_bounded() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) == 1.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 1.0
    assert retry_after_seconds("86400") == 30.0
    assert retry_after_seconds("-5") == 0.0
