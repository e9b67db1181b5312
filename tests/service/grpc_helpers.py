"""Kit services serving gRPC on real sockets for the gRPC tests: the ledger in the test's process
or as a process of its own, a JWKS to verify tokens against, and certificates."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import FastAPI
from grpc_health.v1 import health_pb2
from grpc_ledger import Ledger, build
from jwt.algorithms import OKPAlgorithm
from servers import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import held_ports
from edgeway.service import ServiceSettings
from edgeway.service.http import HeadOnlyHttpTools

ROOT = Path(__file__).resolve().parents[2]
ISSUER = "https://security.test"


@dataclass
class Running:
    """A ledger serving HTTP and gRPC."""

    url: str  # its HTTP base URL
    target: str  # host:port of its gRPC
    app: FastAPI
    ledger: Ledger

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.target}"


@contextlib.asynccontextmanager
async def ledger(tmp_path: Path, *, instance: str = "ledger", **settings: Any) -> AsyncIterator[Running]:
    """The ledger in this process: uvicorn on a port of its own, gRPC on a held port, its SQLite
    database in ``tmp_path``."""
    port = held_ports(1)[0]
    settings.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / instance}.db")
    app, servicer = build(ServiceSettings(grpc_port=port, **settings), instance=instance)
    options: dict[str, Any] = {"http": HeadOnlyHttpTools}
    async with serve(app, **options) as url:
        yield Running(url, f"127.0.0.1:{port}", app, servicer)


@dataclass
class Issuer:
    """Signs access tokens whose key a real JWKS endpoint publishes."""

    jwks_url: str
    key: ed25519.Ed25519PrivateKey = field(repr=False)

    def token(self, subject: str = "user-1", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "sub": subject, "iat": now, "exp": now + 300, "roles": ["customer"], **claims}
        return jwt.encode(body, self.key, algorithm="EdDSA", headers={"kid": "k1", "typ": "at+jwt"})


@contextlib.asynccontextmanager
async def issuer() -> AsyncIterator[Issuer]:
    key = ed25519.Ed25519PrivateKey.generate()
    jwk = {**json.loads(OKPAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "EdDSA", "use": "sig"}

    async def document(request: Request) -> JSONResponse:
        return JSONResponse({"keys": [jwk]})

    async with serve(Starlette(routes=[Route("/.well-known/jwks.json", document)])) as url:
        yield Issuer(f"{url}/.well-known/jwks.json", key)


def identity_settings(found: Issuer, **more: Any) -> dict[str, Any]:
    return {"jwks_url": found.jwks_url, "token_issuer": ISSUER, "revocations_url": "", **more}


# -- the ledger as a process of its own ------------------------------------------------------


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    target: str
    instance: str

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.target}"


def _environment(tmp_path: Path, instance: str, http_port: int, grpc_port: int, **env: str) -> dict[str, str]:
    paths = [str(ROOT / "src"), str(ROOT / "tests" / "service"), str(ROOT / "tests")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "EDGEWAY_PORT": str(http_port),
        "EDGEWAY_GRPC_PORT": str(grpc_port),
        "EDGEWAY_INSTANCE_ID": instance,
        "EDGEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / instance}.db",
        "EDGEWAY_DATA_DIR": str(tmp_path / instance),
        "EDGEWAY_TRUST_GATEWAY_HEADERS": "true",
        **env,
    }


def health_check(
    channel: grpc.aio.Channel,
) -> grpc.aio.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]:
    """``grpc.health.v1.Health/Check`` on ``channel``, typed (the health package's stub is not)."""
    return channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


def health_watch(
    channel: grpc.aio.Channel,
) -> grpc.aio.UnaryStreamMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]:
    return channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


async def wait_serving(
    target: str, proc: subprocess.Popen[bytes] | None = None, within: float = 60.0
) -> None:
    """Until the gRPC health check of ``target`` says SERVING."""
    deadline = time.monotonic() + within
    async with grpc.aio.insecure_channel(target) as channel:
        check = health_check(channel)
        while True:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the ledger process exited with {proc.returncode}")
            try:
                answer = await check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{target} did not serve gRPC within {within}s")
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def ledger_processes(tmp_path: Path, count: int, **env: str) -> Iterator[list[Process]]:
    """``count`` ledger processes (``python tests/service/grpc_ledger.py``), each on its own ports;
    stdout (JSON log lines) kept in ``tmp_path/<instance>.log``."""
    ports = held_ports(2 * count)
    procs: list[Process] = []
    try:
        for n in range(count):
            instance = f"ledger-{n}"
            log = (tmp_path / f"{instance}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "service" / "grpc_ledger.py")],
                env=_environment(tmp_path, instance, ports[2 * n], ports[2 * n + 1], **env),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
            procs.append(Process(proc, f"127.0.0.1:{ports[2 * n + 1]}", instance))
        yield procs
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.proc.terminate()
        for p in procs:
            try:
                p.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()


def log_lines(tmp_path: Path, instance: str) -> list[dict[str, Any]]:
    """The JSON lines a ledger process wrote so far."""
    lines = (tmp_path / f"{instance}.log").read_bytes().splitlines()
    return [json.loads(line) for line in lines if line.startswith(b"{")]
