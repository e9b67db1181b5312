from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import gateway, nginx, tls
from bench.errors import BenchError
from edgeway.gateway.tls.context import TLS12_CIPHERS
from edgeway.pki.local_ca import dev_certificates


def test_nginx_serves_the_gateways_certificate_and_ciphers(tmp_path: Path) -> None:
    certs = dev_certificates(tmp_path / "pki", ("127.0.0.1",))
    settings = nginx.NginxTls(certs.server_cert, certs.server_key, TLS12_CIPHERS)
    text = nginx.render_config(tmp_path, port=8443, backend_port=9000, access_log=False, tls=settings)
    assert "listen 127.0.0.1:8443 ssl backlog=4096 reuseport;" in text
    assert f"ssl_ciphers {TLS12_CIPHERS};" in text
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
    plain = nginx.render_config(tmp_path, port=8080, backend_port=9000, access_log=False)
    assert "ssl" not in plain
    if shutil.which("nginx"):
        nginx.check_config(
            nginx.write_config(tmp_path / "n", port=8443, backend_port=9000, access_log=False, tls=settings)
        )


def test_unknown_legs_are_refused_before_anything_starts() -> None:
    with pytest.raises(BenchError, match="unknown leg"):
        tls.run(json=True, only=["haproxy"])


@pytest.mark.slow
def test_a_short_run_measures_keep_alive_and_handshakes(capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import require

    require("wrk", "nginx", "openssl")
    if gateway.unavailable_reason() is not None:
        pytest.skip(gateway.unavailable_reason() or "")
    result = tls.run(json=True, duration=1, connections=[4], warmup=0, clients=1)
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert result["failed"] is False, result["details"]["failed_legs"]
    for key in (
        "edgeway_rps",
        "nginx_rps",
        "handshakes_per_s",
        "nginx_handshakes_per_s",
        "edgeway_plain_rps",
    ):
        assert result[key] > 10, key
    assert result["ratio_nginx"] == pytest.approx(result["edgeway_rps"] / result["nginx_rps"], rel=1e-2)
    assert result["details"]["handshakes"]["edgeway_handshakes"]["cpu_us_per_handshake"] > 0
