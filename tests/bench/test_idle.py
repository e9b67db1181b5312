from __future__ import annotations

from pathlib import Path

from bench import idle
from bench.proxy import backend_process


async def test_holds_idle_keep_alive_connections_and_reads_the_servers_memory(tmp_path: Path) -> None:
    with backend_process(tmp_path, port=0) as backend:
        result = await idle.hold(backend.host, backend.port, backend.pid, connections=150, settle_s=0.1)
    assert result.connections == 150
    assert result.rss_held_mb > 5
    assert result.rss_held_mb >= result.rss_before_mb
