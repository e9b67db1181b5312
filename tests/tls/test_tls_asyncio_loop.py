"""The HTTPS listener on asyncio's own event loop (an embedder without uvloop): the handshake
hand-off, SNI, client certificates and a certificate reload work there too."""

from __future__ import annotations

import asyncio
from pathlib import Path

import uvloop
from tls_helpers import HttpsClient, Pki, echo_backend, https_get, serving, tls_config, write_config


async def test_https_with_client_certificates_and_a_reload_on_the_asyncio_loop(tmp_path: Path) -> None:
    assert not isinstance(asyncio.get_running_loop(), uvloop.Loop)
    pki = Pki(tmp_path / "pki")
    tls = {
        "certificates": [pki.loopback.entry(), pki.api.entry()],
        "client_certificates": {"ca": str(pki.client_ca_file), "mode": "optional"},
    }
    async with echo_backend() as port:
        path = tmp_path / "gw.yaml"
        write_config(path, tls_config(port, tls))
        async with serving(path) as server:
            ctx = pki.client_context(pki.client)
            client = await HttpsClient.connect(server.port, ctx, "api.example.com")
            try:
                assert client.peer_names() == ["api.example.com"]
                first = await client.request("GET", "/", host="api.example.com")
                assert first.json()["headers"]["x-edgeway-client-cert-subject"].endswith("CN=partner-a")
                tls["certificates"] = [pki.loopback.entry()]  # api.example.com now gets the default
                write_config(path, tls_config(port, tls))
                result = await server.reload("api")
                assert result is not None
                assert result.status == "applied"
                _, names = await https_get(server.port, pki.client_context(), server_hostname="localhost")
                assert "localhost" in names
                again = await client.request("GET", "/", host="api.example.com")  # the open connection
                assert again.status == 200
            finally:
                await client.close()
