from __future__ import annotations

import urllib.request
from pathlib import Path

from bench import nginx
from bench.proxy import backend_process
from conftest import dead_port, held_ports, require


def test_config_has_one_worker_and_a_keep_alive_upstream(tmp_path: Path) -> None:
    text = nginx.render_config(tmp_path, port=8080, backend_port=9000, access_log=False)
    assert "worker_processes 1;" in text
    assert "keepalive 64;" in text
    assert "proxy_http_version 1.1;" in text
    assert 'proxy_set_header Connection "";' in text
    assert "server 127.0.0.1:9000;" in text
    assert "listen 127.0.0.1:8080" in text
    assert "access_log off;" in text


def test_config_keeps_every_file_in_the_prefix(tmp_path: Path) -> None:
    text = nginx.render_config(tmp_path, port=8080, backend_port=9000, access_log=True)
    assert f"access_log {tmp_path}/access.log" in text
    for directive in ("pid", "error_log", "client_body_temp_path", "proxy_temp_path"):
        line = next(line for line in text.splitlines() if line.strip().startswith(directive + " "))
        assert str(tmp_path) in line


def test_nginx_accepts_both_variants(tmp_path: Path) -> None:
    require("nginx")
    for access_log in (False, True):
        config = nginx.write_config(
            tmp_path / str(access_log), port=dead_port(), backend_port=dead_port(), access_log=access_log
        )
        nginx.check_config(config)


def test_nginx_proxies_to_the_backend_and_logs_when_asked(tmp_path: Path) -> None:
    require("nginx")
    with backend_process(tmp_path, port=0) as backend:
        [port] = held_ports(1)  # nginx cannot bind port 0; it listens with reuseport
        proc = nginx.process(tmp_path / "nginx", port=port, backend_port=backend.port, access_log=True)
        with proc, urllib.request.urlopen(proc.url + "/", timeout=5) as response:
            assert response.status == 200
            assert b'"backend"' in response.read()
        assert "GET / HTTP/1.1" in (tmp_path / "nginx" / "access.log").read_text()
