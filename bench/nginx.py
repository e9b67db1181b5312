"""nginx as the reference reverse proxy: one worker, keep-alive upstream pool, run as a child.

Everything nginx writes (pid, error log, access log, body temp files) lives in one temp dir, so a
run needs no root and leaves nothing behind. The config is tuned the way an operator would for a
proxy benchmark (upstream keep-alive, no per-connection request cap), because the point is to
compare against nginx at its best.
"""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ProcessFailed, ToolMissing
from bench.harness import ManagedProcess

INSTALL_HINT = "apt-get install nginx (the nginx leg is skipped until then)"

_TEMPLATE = """\
# Written by bench/nginx.py for one benchmark run.
{user_line}worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 16384;
}}

http {{
    {access_log}
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    # nginx's default closes a client connection after 1000 requests; the gateway does not.
    keepalive_requests 1000000;
    keepalive_timeout 75s;

    upstream backend {{
        server {backend_host}:{backend_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}

    server {{
        # reuseport: nginx cannot take port 0, so a caller may hold the port it is told with
        # SO_REUSEPORT until nginx listens (one worker: one socket, as without it).
        listen {host}:{port}{ssl}{http2} backlog=4096 reuseport;
{ssl_block}        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    path = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise ToolMissing("nginx", INSTALL_HINT)
    return path


def _nofile_limit() -> int:
    # nginx may raise its own limit only up to the hard limit it inherits.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)


@dataclass(frozen=True)
class NginxTls:
    """HTTPS on nginx's listener, set like the gateway's (bench tls): the same certificate, the
    same protocols and TLS 1.2 ciphers, tickets and a session cache."""

    cert: Path
    key: Path
    ciphers: str

    def directives(self) -> str:
        return (
            f"        ssl_certificate {self.cert};\n"
            f"        ssl_certificate_key {self.key};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            f"        ssl_ciphers {self.ciphers};\n"
            "        ssl_prefer_server_ciphers off;\n"
            "        ssl_session_cache shared:SSL:10m;\n"
            "        ssl_session_tickets on;\n"
        )


def render_config(
    prefix: Path,
    *,
    port: int,
    backend_port: int,
    access_log: bool,
    host: str = "127.0.0.1",
    backend_host: str = "127.0.0.1",
    tls: NginxTls | None = None,
    http2: bool = False,
) -> str:
    # The combined format, unbuffered, to a file: what a default nginx install does.
    log = f"access_log {prefix}/access.log combined;" if access_log else "access_log off;"
    # As root, nginx's workers would switch to 'nobody' and lose access to the temp dir; as any
    # other user the directive is ignored with a warning, so leave it out.
    user_line = ""
    if os.geteuid() == 0:
        user_line = f"user {pwd.getpwuid(0).pw_name};\n"
    return _TEMPLATE.format(
        user_line=user_line,
        nofile=_nofile_limit(),
        prefix=prefix,
        access_log=log,
        host=host,
        port=port,
        backend_host=backend_host,
        backend_port=backend_port,
        ssl=" ssl" if tls is not None else "",
        # nginx 1.22's form (`http2 on` came in 1.25): on a plaintext port, h2c by prior knowledge.
        http2=" http2" if http2 else "",
        ssl_block=tls.directives() if tls is not None else "",
    )


def write_config(
    prefix: Path,
    *,
    port: int,
    backend_port: int,
    access_log: bool,
    host: str = "127.0.0.1",
    tls: NginxTls | None = None,
    http2: bool = False,
) -> Path:
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(
        render_config(
            prefix,
            port=port,
            backend_port=backend_port,
            access_log=access_log,
            host=host,
            tls=tls,
            http2=http2,
        )
    )
    return path


def argv(config: Path, *, test: bool = False) -> list[str]:
    prefix = config.parent
    # -e: the error log before the config is read; the compiled-in /var/log/nginx may not be ours.
    args = [nginx_binary(), "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(config)]
    if test:
        return [*args, "-t", "-q"]
    return [*args, "-g", "daemon off;"]


def check_config(config: Path) -> None:
    """``nginx -t`` on the file; raises with nginx's own message when it refuses it."""
    done = subprocess.run(argv(config, test=True), capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise ProcessFailed("nginx -t", f"rejected {config}", (done.stdout + done.stderr).strip())


def process(
    prefix: Path,
    *,
    port: int,
    backend_port: int,
    access_log: bool,
    name: str = "nginx",
    tls: NginxTls | None = None,
    http2: bool = False,
) -> ManagedProcess:
    """A not-yet-started nginx reverse proxy to the backend; start it with ``.start()``."""
    config = write_config(
        prefix, port=port, backend_port=backend_port, access_log=access_log, tls=tls, http2=http2
    )
    check_config(config)
    return ManagedProcess(
        name,
        argv(config),
        port=port,
        log_dir=prefix,
        env=dict(os.environ),
        scheme="https" if tls is not None else "http",
    )
