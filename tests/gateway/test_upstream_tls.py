"""TLS from the gateway to its services, over real sockets: verification, SNI, mTLS, what a
failed handshake answers, keep-alive and the stale-connection retry over TLS, WebSocket to a
wss service, calls of aggregate endpoints, and certificates read again on reload."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import backend, gateway, read_request
from upstream_tls_helpers import Pki, RawHandler, make_pki, tls_backend

from conftest import raw_http
from edgeway.gateway.config import load_config, validate_config
from edgeway.gateway.core.errors import ConfigError
from edgeway.gateway.core.runtime import Gateway
from edgeway.http.listener import Listener, bind_socket

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
GET = b"GET /api/x HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_config(port: int, host: str = "127.0.0.1", **service: Any) -> dict[str, Any]:
    return {
        "name": "tls-gw",
        "services": {"backend": {"instances": [f"https://{host}:{port}"], **service}},
        "routes": [
            {
                "id": "api",
                "match": {"path": "/api/**"},
                "proxy": {"service": "backend", "strip_prefix": "/api"},
            },
            {"id": "ws", "match": {"path": "/ws"}, "proxy": {"service": "backend", "websocket": True}},
        ],
    }


def answering(seen: list[dict[bytes, bytes]] | None = None, peers: list[Any] | None = None) -> RawHandler:
    """Answers every request on the connection with 200 ``ok`` (keep-alive)."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if peers is not None:
            peers.append(w.get_extra_info("peercert"))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                line, headers, _ = await read_request(r)
                if seen is not None:
                    seen.append({b"line": line, **headers})
                w.write(OK)
                await w.drain()

    return handler


def status_and_problem(out: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/problem+json" in head.lower(), head
    return status, json.loads(body)


async def test_an_https_instance_is_verified_and_answers(pki: Pki) -> None:
    seen: list[dict[bytes, bytes]] = []
    async with (
        tls_backend(answering(seen), pki.server_context()) as port,
        gateway(tls_config(port, tls={"ca": str(pki.ca_file)})) as (gport, log),
    ):
        out = await raw_http(gport, GET)
    assert out.startswith(b"HTTP/1.1 200"), out
    assert out.endswith(b"ok")
    assert seen[0][b"line"] == b"GET /x HTTP/1.1"
    assert seen[0][b"host"] == b"127.0.0.1:%d" % port
    assert json.loads(log.getvalue().splitlines()[-1])["upstream"] == f"127.0.0.1:{port}"


async def test_sni_is_the_server_name_and_the_certificate_must_carry_it(pki: Pki) -> None:
    # The instance is an IP; the certificate names only orders.internal: with `server_name` the
    # gateway asks for that name (SNI) and verifies it.
    names: list[str | None] = []
    ctx = pki.server_context(pki.issue("orders.internal"))
    ctx.sni_callback = lambda _sock, name, _ctx: names.append(name)
    async with tls_backend(answering(), ctx) as port:
        async with gateway(
            tls_config(port, tls={"ca": str(pki.ca_file), "server_name": "orders.internal"})
        ) as (
            gport,
            _,
        ):
            ok = await raw_http(gport, GET)
        async with gateway(tls_config(port, tls={"ca": str(pki.ca_file)})) as (gport, _):
            wrong = await raw_http(gport, GET)
    assert ok.startswith(b"HTTP/1.1 200"), ok
    assert names[0] == "orders.internal"
    status, problem = status_and_problem(wrong)
    assert status == 502
    assert problem["detail"] == (
        f"TLS handshake with 127.0.0.1:{port} failed: certificate verify failed: IP address mismatch, "
        "certificate is not valid for '127.0.0.1'"
    )


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("wrong-ca", "certificate verify failed: unable to get local issuer certificate"),
        (
            "wrong-name",
            "certificate verify failed: hostname mismatch, certificate is not valid for 'other.internal'",
        ),
        ("expired", "certificate verify failed: certificate has expired"),
    ],
)
async def test_a_certificate_that_fails_verification_is_a_502_naming_the_instance_and_why(
    pki: Pki, case: str, why: str
) -> None:
    seen: list[dict[bytes, bytes]] = []
    leaf = pki.issue("localhost", "127.0.0.1", expired=True) if case == "expired" else None
    tls: dict[str, Any] = {"ca": str(pki.other_ca_file if case == "wrong-ca" else pki.ca_file)}
    if case == "wrong-name":
        tls["server_name"] = "other.internal"
    async with (
        tls_backend(answering(seen), pki.server_context(leaf)) as port,
        gateway(tls_config(port, tls=tls)) as (gport, _),
    ):
        out = await raw_http(gport, GET)
    status, problem = status_and_problem(out)
    assert status == 502
    assert problem["title"] == "Bad Gateway"
    assert problem["detail"] == f"TLS handshake with 127.0.0.1:{port} failed: {why}"
    assert seen == []  # no request ever reached the service


async def test_the_system_cas_do_not_trust_a_private_ca(pki: Pki) -> None:
    # An https:// instance without a `tls` block: verification is on, against the system's CAs.
    async with (
        tls_backend(answering(), pki.server_context()) as port,
        gateway(tls_config(port)) as (gport, _),
    ):
        out = await raw_http(gport, GET)
    status, problem = status_and_problem(out)
    assert status == 502
    assert "certificate verify failed" in problem["detail"]


async def test_a_plaintext_service_behind_an_https_instance_is_a_502_never_plaintext(pki: Pki) -> None:
    received: list[bytes] = []

    async def plaintext(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = await r.read(65536)
        received.append(data)
        w.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await w.drain()
        w.close()

    async with (
        backend(plaintext) as port,
        gateway(tls_config(port, tls={"ca": str(pki.ca_file)})) as (gport, _),
    ):
        out = await raw_http(gport, GET)
    status, problem = status_and_problem(out)
    assert status == 502
    assert problem["detail"] == (
        f"TLS handshake with 127.0.0.1:{port} failed: the instance does not speak TLS on this port "
        "(plaintext HTTP?) (wrong version number)"
    )
    # What reached the service was a TLS ClientHello (a handshake record), never the request.
    assert received
    assert received[0][:1] == b"\x16"
    assert b"GET /" not in b"".join(received)


async def test_mtls_the_service_requires_the_gateways_client_certificate(pki: Pki) -> None:
    peers: list[Any] = []
    seen: list[dict[bytes, bytes]] = []
    with_cert = {"ca": str(pki.ca_file), "cert": str(pki.client_cert_file), "key": str(pki.client_key_file)}
    async with tls_backend(answering(seen, peers), pki.server_context(require_client=True)) as port:
        async with gateway(tls_config(port, tls=with_cert)) as (gport, _):
            ok = await raw_http(gport, GET)
        async with gateway(tls_config(port, tls={"ca": str(pki.ca_file)})) as (gport, _):
            refused = await raw_http(gport, GET)
    assert ok.startswith(b"HTTP/1.1 200"), ok
    subject = dict(part[0] for part in peers[0]["subject"])
    assert subject["commonName"] == "edge-gateway"
    status, problem = status_and_problem(refused)
    assert status == 502
    assert f"127.0.0.1:{port}" in problem["detail"]
    assert "client certificate" in problem["detail"]
    assert len(seen) == 1  # only the request with the certificate reached the service


async def test_keep_alive_over_tls_one_handshake_for_many_requests(pki: Pki) -> None:
    connections: list[int] = []
    ctx = pki.server_context()

    def counting() -> RawHandler:
        inner = answering()

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            connections.append(1)
            await inner(r, w)

        return handler

    async with (
        tls_backend(counting(), ctx) as port,
        gateway(tls_config(port, tls={"ca": str(pki.ca_file)})) as (gport, _),
    ):
        answers = [await raw_http(gport, GET) for _ in range(10)]
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
    assert len(connections) == 1
    assert ctx.session_stats()["accept_good"] == 1  # one handshake for ten requests


@pytest.mark.parametrize("close", ["close_notify", "abrupt"])
async def test_a_tls_service_that_closes_after_every_answer_is_retried_on_a_fresh_connection(
    pki: Pki, close: str
) -> None:
    # Like the plaintext guard test (test_gateway_upstream_integrity): a service that closes its
    # keep-alive-looking connections, here with a TLS close_notify or by dropping TCP without
    # one. The pooled connection is stale either way; every request is answered 200.
    async def closes(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_request(r)
            w.write(OK)
            await w.drain()
        if close == "abrupt":
            w.transport.abort()
        else:
            w.close()

    async with (
        tls_backend(closes, pki.server_context()) as port,
        gateway(tls_config(port, tls={"ca": str(pki.ca_file)})) as (gport, _),
    ):
        answers: list[bytes] = []
        for pause in (0.0, 0.05, 0.0):
            answers += await asyncio.gather(*(raw_http(gport, GET) for _ in range(10)))
            await asyncio.sleep(pause)
    assert [a[:12] for a in answers] == [b"HTTP/1.1 200"] * 30, [a[-160:] for a in answers]


async def test_a_tls_service_that_drops_the_connection_mid_body_cuts_the_response(pki: Pki) -> None:
    async def drops(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly-part")
        await w.drain()
        await asyncio.sleep(0.05)
        w.transport.abort()

    async with (
        tls_backend(drops, pki.server_context()) as port,
        gateway(tls_config(port, tls={"ca": str(pki.ca_file)})) as (gport, _),
    ):
        out = await raw_http(gport, GET)
        after = await raw_http(gport, GET)  # the gateway is fine; the next one fails the same way
    assert out.startswith(b"HTTP/1.1 200")
    assert out.endswith(b"only-part")  # truncated, then closed: never padded
    assert after.endswith(b"only-part")


async def test_a_websocket_is_tunnelled_to_a_wss_service(pki: Pki) -> None:
    import websockets

    async def echo(ws: websockets.ServerConnection) -> None:
        async for msg in ws:
            await ws.send(f"echo:{msg!s}:{ws.request.headers['host'] if ws.request else ''}")

    async with websockets.serve(echo, "127.0.0.1", 0, ssl=pki.server_context()) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with (
            gateway(tls_config(port, tls={"ca": str(pki.ca_file)})) as (gport, _),
            websockets.connect(f"ws://127.0.0.1:{gport}/ws") as ws,
        ):
            for i in range(3):
                await ws.send(f"m{i}")
                assert await ws.recv() == f"echo:m{i}:127.0.0.1:{port}"


async def test_a_failed_handshake_is_a_connect_failure_retried_on_another_instance(pki: Pki) -> None:
    # A POST is never retried once sent, but a handshake that failed sent nothing: it goes to
    # the next instance, and the failing one is ejected like one that refuses connections.
    seen: list[dict[bytes, bytes]] = []
    bad_seen: list[dict[bytes, bytes]] = []
    expired = pki.server_context(pki.issue("localhost", "127.0.0.1", expired=True))
    async with (
        tls_backend(answering(seen), pki.server_context()) as good,
        tls_backend(answering(bad_seen), expired) as bad,
    ):
        cfg = tls_config(good, tls={"ca": str(pki.ca_file)})
        svc = cfg["services"]["backend"]
        svc["instances"] = [f"https://127.0.0.1:{bad}", f"https://127.0.0.1:{good}"]
        svc["retry"] = {"attempts": 2}
        svc["outlier_ejection"] = {"consecutive_failures": 1, "max_ejection_percent": 50}
        async with gateway(cfg) as (gport, log):
            post = b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
            answers = [await raw_http(gport, post) for _ in range(4)]
    assert [a[:12] for a in answers] == [b"HTTP/1.1 200"] * 4, answers
    assert len(seen) == 4
    assert bad_seen == []
    # The bad instance was tried once, then ejected: the rest went straight to the good one.
    attempts = [json.loads(line).get("attempts", 1) for line in log.getvalue().splitlines()]
    assert attempts.count(2) == 1, attempts


async def test_aggregate_calls_to_an_https_service_use_tls(pki: Pki) -> None:
    async def json_service(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await read_request(r)
                body = b'{"stock": 3}'
                w.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                    % (len(body), body)
                )
                await w.drain()

    def cfg(port: int, ca: Path) -> dict[str, Any]:
        return {
            "name": "tls-agg",
            "services": {"inventory": {"instances": [f"https://127.0.0.1:{port}"], "tls": {"ca": str(ca)}}},
            "routes": [
                {
                    "id": "screen",
                    "match": {"path": "/screen"},
                    "aggregate": {"calls": {"inventory": {"service": "inventory", "path": "/stock"}}},
                }
            ],
        }

    get = b"GET /screen HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    async with tls_backend(json_service, pki.server_context()) as port:
        async with gateway(cfg(port, pki.ca_file)) as (gport, _):
            ok = await raw_http(gport, get)
        async with gateway(cfg(port, pki.other_ca_file)) as (gport, _):
            failed = await raw_http(gport, get)
    assert ok.startswith(b"HTTP/1.1 200"), ok
    assert json.loads(ok.partition(b"\r\n\r\n")[2]) == {"stock": 3}
    status, problem = status_and_problem(failed)
    assert status == 502
    assert problem["code"] == "tls_failed"
    assert "certificate verify failed" in problem["detail"]


async def test_health_checks_use_the_services_tls(pki: Pki) -> None:
    # The health check connects like the traffic: an instance whose certificate the gateway
    # does not trust is unhealthy, with the handshake's failure as the reason.
    async with (
        tls_backend(answering(), pki.server_context()) as good,
        tls_backend(answering(), pki.server_context(pki.issue("elsewhere.internal"))) as misnamed,
    ):
        cfg = tls_config(good, tls={"ca": str(pki.ca_file)})
        svc = cfg["services"]["backend"]
        svc["instances"] = [f"https://127.0.0.1:{good}", f"https://127.0.0.1:{misnamed}"]
        svc["health_check"] = {"path": "/health", "interval": 5, "timeout": 1}
        gw = Gateway(validate_config(cfg), None)
        await gw.start()
        try:
            from edgeway.gateway.upstream.resilient import service_guard

            guard = service_guard(gw.env, "backend")
            assert guard is not None
            states = {ep.port: guard.state(ep) for ep in gw.clusters["backend"].endpoints}
            good_health, bad_health = states[good].health, states[misnamed].health
            assert good_health is not None
            assert bad_health is not None
            assert good_health.healthy
            assert not bad_health.healthy
            assert bad_health.reason == (
                f"TLS handshake with 127.0.0.1:{misnamed} failed: certificate verify failed: IP address "
                "mismatch, certificate is not valid for '127.0.0.1'"
            )
        finally:
            await gw.stop()


async def test_a_reload_reads_rotated_certificates_for_new_connections(pki: Pki, tmp_path: Path) -> None:
    # The same config, a CA file whose content changed (rotation): the cluster is reused (its
    # pools and open connections stay) and new connections trust the new file.
    ca_file = tmp_path / "rotating-ca.pem"
    ca_file.write_bytes(pki.other_ca_file.read_bytes())
    async with tls_backend(answering(), pki.server_context()) as port:
        cfg = validate_config(tls_config(port, tls={"ca": str(ca_file)}))
        first = Gateway(cfg, None)
        await first.start()
        listener = Listener(first, first.limits)
        await listener.start(bind_socket("127.0.0.1", 0))
        try:
            before = await raw_http(listener.port, GET)
            ca_file.write_bytes(pki.ca_file.read_bytes())
            second = Gateway(cfg, None, reuse=first.clusters)
            await second.start()
            assert second.clusters["backend"] is first.clusters["backend"]
            second.adopt_clusters()
            first.hand_over(first.clusters)
            listener.set_handler(second)
            after = await raw_http(listener.port, GET)
            await first.stop()
        finally:
            await listener.shutdown(1.0)
            await second.stop()
    assert status_and_problem(before)[0] == 502
    assert after.startswith(b"HTTP/1.1 200"), after


async def test_plaintext_upstreams_connect_without_tls() -> None:
    # The plaintext path is unchanged: an http:// instance gets no TLS whatever else is
    # configured next to it.
    from edgeway.gateway.upstream.clusters import make_endpoint
    from edgeway.http.limits import PoolLimits

    plain = make_endpoint("http://127.0.0.1:80", PoolLimits())
    secure = make_endpoint("https://svc.internal:443", PoolLimits(), ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    assert (plain.tls, plain.authority) == (None, b"127.0.0.1")
    assert secure.tls is not None
    assert (secure.server_hostname, secure.authority) == ("svc.internal", b"svc.internal")


# --------------------------------------------------------------------------- config


def check(tmp_path: Path, tls_block: str, instance: str = "https://127.0.0.1:9443") -> list[str]:
    """The issues of a config whose one service has ``tls_block`` (YAML lines under ``tls:``)."""
    path = tmp_path / "gw.yaml"
    path.write_text(
        "services:\n"
        "  orders:\n"
        f'    instances: ["{instance}"]\n'
        "    tls:\n" + "".join(f"      {line}\n" for line in tls_block.splitlines()) + "routes:\n"
        "  - match: {path: /orders/**}\n"
        "    proxy: {service: orders}\n"
    )
    try:
        load_config(path)
    except ConfigError as exc:
        return [str(issue) for issue in exc.issues]
    return []


def test_a_valid_tls_block_loads(pki: Pki, tmp_path: Path) -> None:
    block = (
        f"ca: {pki.ca_file}\ncert: {pki.client_cert_file}\nkey: {pki.client_key_file}\n"
        "server_name: orders.internal"
    )
    assert check(tmp_path, block) == []
    assert check(tmp_path, 'min_version: "1.3"') == []


def test_a_missing_file_is_named_at_its_key(tmp_path: Path) -> None:
    [issue] = check(tmp_path, f"ca: {tmp_path / 'absent.pem'}")
    assert issue.startswith(
        f"{tmp_path / 'gw.yaml'}:5:7: services.orders.tls.ca: file '{tmp_path / 'absent.pem'}' does not exist"
    )


def test_a_key_that_does_not_match_its_certificate_is_refused(pki: Pki, tmp_path: Path) -> None:
    block = f"cert: {pki.client_cert_file}\nkey: {pki.key_file}"  # the service's key, not the client's
    [issue] = check(tmp_path, block)
    assert issue.startswith(
        f"{tmp_path / 'gw.yaml'}:6:7: services.orders.tls.key: the private key in '{pki.key_file}' does not "
        f"match the certificate in '{pki.client_cert_file}' (CN=edge-gateway,"
    )


def test_files_that_hold_no_certificate_or_key_are_refused(pki: Pki, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    [ca] = check(tmp_path, f"ca: {junk}")
    assert "services.orders.tls.ca: " in ca
    assert "holds no usable PEM certificate" in ca
    [cert] = check(tmp_path, f"cert: {junk}\nkey: {pki.client_key_file}")
    assert "services.orders.tls.cert: " in cert
    assert "holds no PEM certificate" in cert
    [key] = check(tmp_path, f"cert: {pki.client_cert_file}\nkey: {junk}")
    assert "services.orders.tls.key: " in key
    assert "holds no usable unencrypted PEM private key" in key


def test_inconsistent_tls_settings_are_refused(pki: Pki, tmp_path: Path) -> None:
    [key] = check(tmp_path, f"key: {pki.client_key_file}")
    assert "services.orders.tls.key: a key without `cert`" in key
    [ca] = check(tmp_path, f"ca: {pki.ca_file}\nverify: false")
    assert "services.orders.tls.ca: `ca` is unused when `verify` is false" in ca
    [name] = check(tmp_path, "server_name: 'not a name'")
    assert "services.orders.tls.server_name: 'not a name' is not a DNS name or an IP address" in name
    [version] = check(tmp_path, 'min_version: "1.1"')
    assert "services.orders.tls.min_version" in version


def test_a_service_with_tls_has_no_plaintext_instance(pki: Pki, tmp_path: Path) -> None:
    [issue] = check(tmp_path, f"ca: {pki.ca_file}", instance="http://127.0.0.1:9000")
    assert issue == (
        f"{tmp_path / 'gw.yaml'}:3:17: services.orders.instances[0]: instance 'http://127.0.0.1:9000' is "
        "plaintext but the service sets `tls`: write https://127.0.0.1:9000"
    )
