"""Push fan-out: events published on the bus reach every subscribed WebSocket client.

    nats-py publisher -> embedded NATS -> edgeway gateway (push route, bus source) -> C clients

The gateway runs as ``edgeway gateway`` (one worker); the broker is the embedded nats-server on a
free port; the clients are raw WebSocket connections in this process that only count message
frames (so the client side costs little next to the gateway). All C clients subscribe to one
topic, then M events are published as fast as nats-py goes; the clock stops when every client has
all M messages. Reported: deliveries/s (C x M / seconds) and the time to the last delivery.

    python -m bench.push_fanout [--clients 100] [--messages 2000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json as jsonlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from bench import gateway
from bench.harness import ManagedProcess, machine, raise_fd_limit, reserved_port
from bench.legs import say
from edgeway.bus.embedded import EmbeddedNats

_NEEDLE = b'"type":"message"'
_HANDSHAKE = (
    b"GET /push?topic=bench/1 HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n"
)


def push_config(port: int, nats_url: str, clients: int) -> dict[str, Any]:
    return {
        "name": "bench-push",
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": None,
        "access_log": {"enabled": False},
        "routes": [
            {
                "id": "push",
                "match": {"path": "/push"},
                "push": {"topics": [{"pattern": "bench/{id}", "allow": "anyone"}], "queue_size": 100_000},
            }
        ],
        "push": {
            "replay_messages": 0,
            "bus": {"url": nats_url, "channels": [{"channel": "bench", "topic": "bench/{room}"}]},
        },
    }


async def _client(port: int, messages: int, subscribed: asyncio.Event, done: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_HANDSHAKE % base64.b64encode(os.urandom(16)))
    await reader.readuntil(b"\r\n\r\n")
    await reader.readuntil(b'"subscribed"')
    subscribed.set()
    tail, count = b"", 0
    while count < messages:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("the gateway closed a client before it had every message")
        window = tail + data
        count += window.count(_NEEDLE)
        tail = window[-(len(_NEEDLE) - 1) :]
    done.append(time.perf_counter())
    writer.close()


async def _measure(port: int, nats_url: str, clients: int, messages: int) -> dict[str, Any]:
    done: list[float] = []
    ready = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.create_task(_client(port, messages, ready[i], done)) for i in range(clients)]
    for event in ready:
        await asyncio.wait_for(event.wait(), 30)
    nc = await nats.connect(nats_url)
    payload = jsonlib.dumps({"room": "1", "text": "x" * 100}).encode()
    started = time.perf_counter()
    for n in range(messages):
        await nc.publish("ew.bench.e._", payload, headers={"ew-id": f"m{n}", "ew-type": "bench.v1"})
    await nc.flush()
    published = time.perf_counter() - started
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    seconds = max(done) - started
    await nc.close()
    return {
        "clients": clients,
        "messages": messages,
        "deliveries": clients * messages,
        "seconds": round(seconds, 3),
        "deliveries_per_s": round(clients * messages / seconds),
        "publish_seconds": round(published, 3),
    }


def run(json: bool = False, clients: int = 100, messages: int = 2000) -> dict[str, Any]:
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="edgeway-push-bench-") as tmp:
        directory = Path(tmp)
        port = reserved_port()
        with EmbeddedNats(port=0, data_dir=directory / "nats") as broker:
            config = gateway.write_config(directory, push_config(port, broker.url, clients))
            say(f"push fan-out: {clients} clients x {messages} messages")
            with ManagedProcess("edgeway", gateway.argv(config), port=port, log_dir=directory).start():
                result = asyncio.run(_measure(port, broker.url, clients, messages))
    result["machine"] = machine()
    if json:
        print(jsonlib.dumps(result))
    else:
        say(
            f"{result['deliveries_per_s']:,} deliveries/s; last delivery after {result['seconds']} s "
            f"(publishing took {result['publish_seconds']} s; load average {result['machine']['loadavg_1m']})"
        )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    run(options.json, options.clients, options.messages)
