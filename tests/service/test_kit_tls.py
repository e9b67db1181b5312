"""The service kit over TLS, on real sockets: serving HTTPS, requiring client certificates, the
verified client certificate in an endpoint, kit-to-kit calls over mTLS, a gateway in front with
its client certificate, and settings that cannot work refused at start."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from gateway_helpers import gateway
from servers import serve
from upstream_tls_helpers import Pki, make_pki

from conftest import raw_http
from edgeway.service import Kit, ServiceSettings, create_app
from edgeway.service.errors import PeerUnavailableError, SettingsError
from edgeway.service.http import HeadOnlyHttpTools
from edgeway.service.tls import ClientCertificate, uvicorn_tls_options


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def serving(pki: Pki, **more: Any) -> ServiceSettings:
    """Settings of a service serving HTTPS with the loopback certificate."""
    return ServiceSettings(tls_cert=pki.cert_file, tls_key=pki.key_file, **more)


def whoami_app(name: str, settings: ServiceSettings) -> tuple[FastAPI, list[str | None]]:
    """A kit app whose ``/whoami`` answers the caller's verified certificate subject."""
    app = create_app(name, settings=settings, configure_logging=False, access_log=False)
    seen: list[str | None] = []

    @app.get("/whoami")
    async def whoami(cert: ClientCertificate) -> dict[str, Any]:
        seen.append(cert.subject if cert else None)
        if cert is None:
            return {"subject": None}
        return {"subject": cert.subject, "cn": cert.common_name, "dns": list(cert.dns_names)}

    return app, seen


@contextlib.asynccontextmanager
async def running(app: FastAPI, settings: ServiceSettings) -> AsyncIterator[str]:
    """``app`` under uvicorn the way ``Service.run`` serves it: the kit's protocol, TLS options."""
    async with serve(app, http=HeadOnlyHttpTools, **uvicorn_tls_options(settings)) as url:
        yield url


async def test_a_kit_service_serves_https_and_names_no_client_without_a_certificate(pki: Pki) -> None:
    settings = serving(pki)
    app, _ = whoami_app("catalog", settings)
    async with running(app, settings) as url:
        assert url.startswith("https://")
        async with httpx.AsyncClient(verify=pki.client_context()) as http:
            answer = await http.get(url + "/whoami")
        async with httpx.AsyncClient(verify=str(pki.other_ca_file)) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(url + "/whoami")
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(url.replace("https://", "http://") + "/whoami")  # no plaintext on this port
    assert answer.status_code == 200
    assert answer.json() == {"subject": None}


async def test_a_service_requiring_client_certificates_refuses_a_client_without_one(pki: Pki) -> None:
    settings = serving(pki, tls_client_ca=pki.ca_file, tls_client_cert_required=True)
    app, seen = whoami_app("orders", settings)
    async with running(app, settings) as url:
        async with httpx.AsyncClient(verify=pki.client_context()) as http:
            with pytest.raises(httpx.TransportError):
                await http.get(url + "/whoami")
        async with httpx.AsyncClient(verify=pki.client_context(with_cert=True)) as http:
            answer = await http.get(url + "/whoami")
    assert answer.status_code == 200
    body = answer.json()
    assert body["cn"] == "edge-gateway"
    assert body["subject"].startswith("CN=edge-gateway,")
    assert body["dns"] == ["edge-gateway.internal"]
    assert len(seen) == 1  # the client without a certificate never reached the endpoint


async def test_optional_client_certificates_are_verified_when_presented(pki: Pki) -> None:
    settings = serving(pki, tls_client_ca=pki.ca_file)
    app, _ = whoami_app("orders", settings)
    async with running(app, settings) as url:
        async with httpx.AsyncClient(verify=pki.client_context()) as http:
            anonymous = await http.get(url + "/whoami")
        async with httpx.AsyncClient(verify=pki.client_context(with_cert=True)) as http:
            named = await http.get(url + "/whoami")
    assert anonymous.json() == {"subject": None}
    assert named.json()["cn"] == "edge-gateway"


async def test_kit_to_kit_calls_go_over_mtls(pki: Pki) -> None:
    # inventory requires client certificates; orders calls it with the kit's client, which
    # trusts the CA (tls_ca) and presents its certificate (tls_client_cert).
    inventory_settings = serving(pki, tls_client_ca=pki.ca_file, tls_client_cert_required=True)
    inventory, seen = whoami_app("inventory", inventory_settings)
    async with running(inventory, inventory_settings) as inventory_url:

        def orders_app(settings: ServiceSettings) -> FastAPI:
            app = create_app("orders", settings=settings, configure_logging=False, access_log=False)

            @app.get("/peer")
            async def peer(kit: Kit) -> dict[str, Any]:
                try:
                    answer = await kit.client("inventory").get("/whoami")
                except PeerUnavailableError as exc:
                    return {"failed": str(exc)}
                return dict(answer.json())

            return app

        with_cert = ServiceSettings(
            services={"inventory": [inventory_url]},
            tls_ca=pki.ca_file,
            tls_client_cert=pki.client_cert_file,
            tls_client_key=pki.client_key_file,
            client_retries=0,
        )
        without = ServiceSettings(
            services={"inventory": [inventory_url]}, tls_ca=pki.ca_file, client_retries=0
        )
        async with (
            serve(orders_app(with_cert)) as ok_url,
            serve(orders_app(without)) as refused_url,
            httpx.AsyncClient() as http,
        ):
            ok = (await http.get(ok_url + "/peer")).json()
            refused = (await http.get(refused_url + "/peer")).json()
    assert ok["cn"] == "edge-gateway"
    assert "inventory" in refused["failed"]
    assert len(seen) == 1


async def test_a_gateway_reaches_a_kit_service_over_mtls(pki: Pki) -> None:
    settings = serving(pki, tls_client_ca=pki.ca_file, tls_client_cert_required=True)
    app, seen = whoami_app("orders", settings)
    get = b"GET /api/whoami HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    async with running(app, settings) as url:
        tls = {"ca": str(pki.ca_file), "cert": str(pki.client_cert_file), "key": str(pki.client_key_file)}
        cfg = {
            "name": "mtls-gw",
            "services": {"orders": {"instances": [url], "tls": tls}},
            "routes": [
                {"match": {"path": "/api/**"}, "proxy": {"service": "orders", "strip_prefix": "/api"}}
            ],
        }
        async with gateway(cfg) as (gport, _):
            ok = await raw_http(gport, get)
        del tls["cert"], tls["key"]
        async with gateway(cfg) as (gport, _):
            refused = await raw_http(gport, get)
    assert ok.startswith(b"HTTP/1.1 200"), ok
    assert b'"cn":"edge-gateway"' in ok
    assert refused.startswith(b"HTTP/1.1 502"), refused
    assert seen == [seen[0]]  # one request got in: the one with the gateway's certificate


# --------------------------------------------------------------------------- settings


def test_settings_that_cannot_serve_are_refused_naming_the_setting(pki: Pki, tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tls_cert": pki.cert_file, "tls_key": pki.client_key_file}, "tls_key: the private key in"),
        ({"tls_cert": tmp_path / "absent.pem"}, f"tls_cert: file {tmp_path / 'absent.pem'} does not exist"),
        ({"tls_key": pki.key_file}, "tls_key is set without tls_cert"),
        (
            {"tls_cert": pki.cert_file, "tls_key": pki.key_file, "tls_client_cert_required": True},
            "needs tls_client_ca",
        ),
        ({"tls_client_ca": pki.ca_file}, "tls_client_ca is set without tls_cert"),
        ({"tls_client_key": pki.client_key_file}, "tls_client_key is set without tls_client_cert"),
        (
            {"tls_client_cert": pki.client_cert_file, "tls_client_key": pki.key_file},
            "tls_client_key: the private key",
        ),
        (
            {"tls_cert": pki.cert_file, "tls_key": pki.key_file, "advertise_url": "http://10.0.0.5:8000"},
            "advertise https://",
        ),
    ]
    for values, message in cases:
        with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
            ServiceSettings.load(**values)


def test_tls_settings_come_from_the_environment(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    assert uvicorn_tls_options(ServiceSettings()) == {}  # plain HTTP unless told
    monkeypatch.setenv("EDGEWAY_TLS_CERT", str(pki.cert_file))
    monkeypatch.setenv("EDGEWAY_TLS_KEY", str(pki.key_file))
    monkeypatch.setenv("EDGEWAY_TLS_CLIENT_CA", str(pki.ca_file))
    monkeypatch.setenv("EDGEWAY_TLS_CLIENT_CERT_REQUIRED", "true")
    settings = ServiceSettings.load()
    options = uvicorn_tls_options(settings)
    assert options["ssl_certfile"] == str(pki.cert_file)
    assert options["ssl_ca_certs"] == str(pki.ca_file)
    assert options["ssl_cert_reqs"] == 2  # ssl.CERT_REQUIRED
