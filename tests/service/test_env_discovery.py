from __future__ import annotations

from edgeway.service.discovery import ChainDiscovery, EnvDiscovery, StaticDiscovery


async def test_env_discovery_reads_the_service_variable() -> None:
    env = EnvDiscovery({"EDGEWAY_SERVICE_ORDER_API_URLS": " http://a:1 , http://b:2/ ,"})
    assert await env.resolve("order-api") == ["http://a:1", "http://b:2"]
    assert await env.resolve("cart") == []


async def test_the_kit_chains_env_with_the_shared_sources() -> None:
    chain = ChainDiscovery([EnvDiscovery({}), StaticDiscovery({"orders": ["http://s:1"]})])
    assert await chain.resolve("orders") == ["http://s:1"]
