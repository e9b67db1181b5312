"""``edgeway demo``: start a gateway in front of a two-instance sample service on this machine.

This is the first slice of the reference system; the full shop (services, BFFs, security,
embedded NATS) replaces the sample service as it lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from edgeway.gateway.config import GatewayConfig

app = typer.Typer()


def _check_free(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise typer.BadParameter(f"port {port} is already in use; choose another with --port") from None


@app.callback(invoke_without_command=True)
def demo(
    port: int = typer.Option(8080, help="Gateway port."),
    admin_port: int = typer.Option(8081, help="Gateway admin port."),
    backend_ports: str = typer.Option("9101,9102", help="Ports of the two sample service instances."),
) -> None:
    """Start the demo and print its URLs; Ctrl-C stops everything."""
    from rich.console import Console

    from edgeway.gateway.config import validate_config
    from edgeway.gateway.serve import install_uvloop

    ports = [int(p) for p in backend_ports.split(",") if p.strip()]
    for p in (port, admin_port, *ports):
        _check_free(p)
    config = validate_config(
        {
            "name": "demo-gateway",
            "listen": {"host": "127.0.0.1", "port": port},
            "admin": {"host": "127.0.0.1", "port": admin_port},
            "services": {
                "catalog": {
                    "instances": [f"http://127.0.0.1:{p}" for p in ports],
                    "balancer": "round_robin",
                }
            },
            "routes": [
                {
                    "id": "catalog",
                    "match": {"path": "/catalog/**"},
                    "proxy": {"service": "catalog", "strip_prefix": "/catalog"},
                },
            ],
        },
        source="edgeway demo",
    )
    console = Console(stderr=True)
    console.print("[bold]edgeway demo[/bold]: a gateway in front of 2 instances of a sample catalog service")
    console.print(f"  gateway     http://127.0.0.1:{port}/catalog/products")
    console.print(f"  admin       http://127.0.0.1:{admin_port}/routes   /readyz   /healthz")
    for i, p in enumerate(ports, 1):
        console.print(f"  instance {i}  http://127.0.0.1:{p}/products   (direct)")
    console.print("  access log  JSON lines on stdout; Ctrl-C stops")
    install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(config, ports))


async def _main(config: GatewayConfig, ports: list[int]) -> None:
    from edgeway.demo.sample_backend import make_handler
    from edgeway.gateway.serve import run
    from edgeway.http.limits import ServerLimits
    from edgeway.http.listener import Listener, bind_socket

    backends = []
    for i, p in enumerate(ports, 1):
        listener = Listener(make_handler(f"catalog-{i}"), ServerLimits())
        await listener.start(bind_socket("127.0.0.1", p, reuse_port=False))
        backends.append(listener)
    try:
        await run(config)
    finally:
        for b in backends:
            await b.shutdown(1.0)
