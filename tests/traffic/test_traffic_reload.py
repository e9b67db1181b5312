"""Traffic shifting across live reloads of the config file: sticky keys keep their side and
instance, weights a controller set stay while the file's split is unchanged, the file's new
weights apply when it changes, counts go on, and a refused reload changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traffic_helpers import Client, Shadow, answers, instances, servers

from edgeway.gateway.process.serve import GatewayServer
from edgeway.gateway.traffic.state import traffic_of
from live_gateway import gateway_config, ports, serving, write

USERS = [f"u{i}" for i in range(200)]


def config(
    port: int, admin: int, a: list[Shadow], b: list[Shadow], weights: tuple[float, float]
) -> dict[str, Any]:
    route = {
        "id": "app",
        "match": {"path": "/**"},
        "proxy": {
            "split": [{"service": "a", "weight": weights[0]}, {"service": "b", "weight": weights[1]}],
            "sticky": {"header": "X-User"},
        },
    }
    return gateway_config(port, admin, {"a": instances(*a), "b": instances(*b)}, [route])


async def who(client: Client) -> dict[str, str]:
    out: dict[str, str] = {}
    for user in USERS:
        response = await client.request("GET", "/x", headers={"Host": "gw", "X-User": user})
        out[user] = response.headers["x-backend"]
    return out


def split_of(server: GatewayServer) -> Any:
    return traffic_of(server.gateway.env).split("app")


async def test_a_reload_keeps_sticky_keys_run_time_weights_and_counts(tmp_path: Path) -> None:
    port, admin = ports()
    path = tmp_path / "gw.yaml"
    a, b = [Shadow("a1"), Shadow("a2")], [Shadow("b1"), Shadow("b2")]
    async with servers(*a, *b):
        write(path, config(port, admin, a, b, (50, 50)))
        async with serving(path) as server:
            client = await Client.connect(port)
            before = await who(client)
            split = split_of(server)
            # The same file again: the same split object, the same assignments, counts go on.
            assert (await server.reload("api")).status == "applied"  # type: ignore[union-attr]
            assert split_of(server) is split
            assert await who(client) == before
            assert sum(o.requests for o in split.outcomes().values()) == 2 * len(USERS)
            # A controller's weights survive a reload of an unchanged split.
            split.set_weights({"a": 100, "b": 0})
            assert set((await who(client)).values()) <= {"a1", "a2"}
            await server.reload("api")
            assert split_of(server).weights == {"a": 100.0, "b": 0.0}
            # The file's weights change: they apply, from a new split (counts still go on).
            write(path, config(port, admin, a, b, (0, 100)))
            result = await server.reload("api")
            assert result is not None
            assert result.status == "applied"
            assert split_of(server) is not split
            assert split_of(server).weights == {"a": 0.0, "b": 100.0}
            assert set((await who(client)).values()) <= {"b1", "b2"}
            assert sum(o.requests for o in split_of(server).outcomes().values()) == 4 * len(USERS)
            await client.close()


async def test_a_reload_that_removes_an_instance_moves_only_its_keys(tmp_path: Path) -> None:
    port, admin = ports()
    path = tmp_path / "gw.yaml"
    a, b = [Shadow("a1"), Shadow("a2"), Shadow("a3")], [Shadow("b1")]
    async with servers(*a, *b):
        write(path, config(port, admin, a, b, (80, 20)))
        async with serving(path) as server:
            client = await Client.connect(port)
            before = await who(client)
            write(path, config(port, admin, [a[0], a[2]], b, (80, 20)))
            assert (await server.reload("api")).status == "applied"  # type: ignore[union-attr]
            after = await who(client)
            await client.close()
    moved = {u for u in USERS if before[u] != after[u]}
    assert moved == {u for u in USERS if before[u] == "a2"}
    assert moved


async def test_a_refused_reload_leaves_the_split_serving_as_it_was(tmp_path: Path) -> None:
    port, admin = ports()
    path = tmp_path / "gw.yaml"
    a, b = [Shadow("a1")], [Shadow("b1")]
    async with servers(*a, *b):
        write(path, config(port, admin, a, b, (0, 100)))
        async with serving(path) as server:
            split = split_of(server)
            split.set_weights({"a": 100, "b": 0})
            write(path, config(port, admin, a, b, (60, 60)))
            result = await server.reload("api")
            assert result is not None
            assert result.status == "refused"
            assert [i.key_path for i in result.issues] == ["routes[0].proxy.split"]
            assert "sum to 100" in result.issues[0].message
            assert split_of(server) is split
            assert split.weights == {"a": 100.0, "b": 0.0}
            client = await Client.connect(port)
            assert await answers(client, 10) == {"a1": 10}
            await client.close()
