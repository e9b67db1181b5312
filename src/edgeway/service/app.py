"""``create_app``: a FastAPI app wired the way every edgeway service is.

What it adds, and where each piece lives:

============================  ============================================================
``/health/live``, ``/ready``  :mod:`edgeway.service.health`
``/docs``, ``/redoc`` offline :mod:`edgeway.service.openapi` (assets served by the service)
``/metrics``                  :mod:`edgeway.observability.metrics`
request id, traceparent,      :mod:`edgeway.service.middleware`
access log, 500 of last resort
the caller's deadline         :mod:`edgeway.service.deadline`
problem+json errors           :mod:`edgeway.service.problems`
JSON logs                     :mod:`edgeway.observability.logs`
traces (OTLP when configured) :mod:`edgeway.observability.tracing`
``Caller``, role/scope guards :mod:`edgeway.service.identity`
remote config, flags          :mod:`edgeway.service.config_store`, :mod:`edgeway.service.flags`
registry, discovery, clients  :mod:`edgeway.discovery`, :mod:`edgeway.service.clients`
gRPC server and clients       :mod:`edgeway.service.grpc` (``grpc`` extra; ``grpc_port``)
============================  ============================================================

Start-up order: logging, config store (retries, then the disk cache), flags, the registry, the
service's own lifespan, the gRPC server (with ``grpc_port``), the start-up heap frozen
(``gc_freeze``), then readiness turns true and the instance registers itself (when
``advertise_url`` is set): peers find it only once it can serve.
Shutdown runs the other way: readiness turns false, the instance deregisters (so peers stop
picking it), ``shutdown_grace`` seconds pass for in-flight requests and load balancers, the gRPC
server stops (calls in flight get 5 s), the service's lifespan exits, clients close, traces flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from nats.aio.client import Client as NatsClient
from starlette.responses import Response

from edgeway.discovery import natsconn
from edgeway.discovery.errors import RegistryError
from edgeway.discovery.registry import Instance, Registration, Registry
from edgeway.extras import require
from edgeway.observability.logs import setup_logging
from edgeway.observability.metrics import Metrics
from edgeway.observability.tracing import Tracing
from edgeway.process_tuning import freeze_heap
from edgeway.service.clients import RetryPolicy, ServiceClient, http_client
from edgeway.service.config_store import ConfigStore
from edgeway.service.deadline import DeadlineMiddleware
from edgeway.service.discovery import (
    CachedDiscovery,
    ChainDiscovery,
    Discovery,
    EnvDiscovery,
    RegistryDiscovery,
    StaticDiscovery,
)
from edgeway.service.flags import Flags
from edgeway.service.health import CheckFn, Health
from edgeway.service.identity import IdentityConfig, JwksVerifier, TokenVerifier
from edgeway.service.json_body import JsonDepthMiddleware
from edgeway.service.middleware import RequestContextMiddleware
from edgeway.service.openapi import declare_problems, offline_app
from edgeway.service.peer_http import PeerHttp
from edgeway.service.problems import install_problem_handlers
from edgeway.service.settings import ServiceSettings
from edgeway.service.tls import client_tls_context

if TYPE_CHECKING:
    import grpc

    from edgeway.service.grpc.client import GrpcChannel
    from edgeway.service.grpc.server import GrpcServer

__all__ = ["Kit", "ServiceKit", "create_app", "kit_of"]

S = TypeVar("S")
# Calls in flight when the gRPC server stops get this long (uvicorn gives HTTP requests as much).
GRPC_STOP_GRACE = 5.0

_log = logging.getLogger("edgeway.service")
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID")


class ServiceKit:
    """Everything ``create_app`` wired for one service; ``app.state.kit``."""

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        *,
        verifier: TokenVerifier | None,
        discovery: Discovery | None,
        tracing: Tracing | None,
        grpc_discovery: Discovery | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.health = Health()
        self.metrics = Metrics(name)
        self.tracing = tracing if tracing is not None else Tracing(name)
        # Calls to peers over TLS (a CA bundle, a client certificate): one context, made once.
        self._tls = client_tls_context(settings)
        self._http: PeerHttp | None = None
        # The JWKS and revocation fetches (a few a minute) stay on httpx, with the kit's TLS
        # settings when it has some: the security service is a peer like any other.
        self._fetch_http: httpx.AsyncClient | None = None
        if verifier is None:
            if self._tls is not None:
                self._fetch_http = httpx.AsyncClient(timeout=settings.client_timeout, verify=self._tls)
            verifier = JwksVerifier.from_settings(settings, http=self._fetch_http)
        # Built here or passed in, its JWKS refresh runs until the app stops.
        self._jwks_verifier = verifier if isinstance(verifier, JwksVerifier) else None
        self.identity = IdentityConfig(verifier, settings.trust_gateway_headers)
        self.config: ConfigStore | None = None
        self.flags: Flags = Flags({})
        self._flag_store: ConfigStore | None = None
        self.registry: Registry | None = None
        self.registration: Registration | None = None
        self._nc: NatsClient | None = None
        self._explicit_discovery = discovery
        self.discovery: Discovery = discovery if discovery is not None else self._default_discovery()
        self._clients: dict[str, ServiceClient] = {}
        # gRPC (edgeway.service.grpc, imported only when used: the grpc extra)
        self.grpc: GrpcServer | None = None
        self.grpc_access_log = True
        self._explicit_grpc_discovery = grpc_discovery
        self.grpc_discovery: Discovery = (
            grpc_discovery if grpc_discovery is not None else self._default_grpc_discovery()
        )
        self._grpc_channels: dict[str, GrpcChannel] = {}
        self._grpc_stubs: dict[tuple[str, Any], Any] = {}

    def _default_discovery(self) -> Discovery:
        sources: list[Discovery] = [StaticDiscovery(self.settings.services), EnvDiscovery()]
        if self.registry is not None:
            sources.append(RegistryDiscovery(self.registry))
        if self.settings.dns_discovery:
            from edgeway.discovery.dns import DnsDiscovery  # dnspython (~25 ms) only when asked

            sources.append(DnsDiscovery(domain=self.settings.dns_domain))
        return CachedDiscovery(
            ChainDiscovery(sources),
            ttl=self.settings.discovery_cache_ttl,
            max_stale=self.settings.discovery_max_stale,
        )

    def _default_grpc_discovery(self) -> Discovery:
        # The same sources as HTTP, each asked for the gRPC address: grpc_services, the
        # EDGEWAY_SERVICE_<NAME>_GRPC_URLS variable, the registry's "grpc" meta, SRV _grpc._tcp.
        sources: list[Discovery] = [
            StaticDiscovery(self.settings.grpc_services),
            EnvDiscovery(suffix="GRPC_URLS"),
        ]
        if self.registry is not None:
            sources.append(RegistryDiscovery(self.registry, meta="grpc"))
        if self.settings.dns_discovery:
            from edgeway.discovery.dns import DnsDiscovery

            sources.append(
                DnsDiscovery(
                    scheme="grpc", port=50051, srv_prefix="_grpc._tcp.", domain=self.settings.dns_domain
                )
            )
        return CachedDiscovery(ChainDiscovery(sources), ttl=self.settings.discovery_cache_ttl)

    def add_grpc(self, servicer: object) -> None:
        """Serve ``servicer`` (generated by ``edgeway proto compile``) on the gRPC port, beside
        those given to ``create_app(grpc=[...])``; before the app starts."""
        self._grpc_server().add(servicer)

    def _grpc_server(self) -> GrpcServer:
        if self.grpc is None:
            require("grpc", "serving gRPC (grpc_port, create_app(grpc=...))")
            from edgeway.service.grpc.server import GrpcServer

            self.grpc = GrpcServer(
                self.name,
                self.settings,
                health=self.health,
                metrics=self.metrics,
                tracing=self.tracing,
                identity=self.identity,
                access_log=self.grpc_access_log,
            )
        return self.grpc

    def grpc_client(self, service: str, stub: Callable[[grpc.aio.Channel], S]) -> S:
        """A typed client of ``service``: the generated ``stub`` class (``InventoryStub``, typed as
        its ``InventoryAsyncStub``) on a channel to every instance of it, through the kit's gRPC
        discovery, breakers, retry budget and deadlines (:mod:`edgeway.service.grpc.client`).
        One channel per service, shared by its stubs."""
        key = (service, stub)
        found = self._grpc_stubs.get(key)
        if found is None:
            found = self._grpc_stubs[key] = stub(self._grpc_channel(service))
        return found

    def grpc_channel(self, service: str) -> GrpcChannel:
        """The channel :meth:`grpc_client` stubs of ``service`` share: its breakers
        (``channel.peers.breaker_policy``), retry policy and timeout can be tuned before use."""
        return self._grpc_channel(service)

    def _grpc_channel(self, service: str) -> GrpcChannel:
        channel = self._grpc_channels.get(service)
        if channel is None:
            require("grpc", f"calling {service} over gRPC (kit.grpc_client)")
            from edgeway.service.grpc.client import GrpcChannel, channel_credentials

            channel = self._grpc_channels[service] = GrpcChannel(
                service,
                self.grpc_discovery,
                timeout=self.settings.client_timeout,
                retry=RetryPolicy(attempts=self.settings.client_retries + 1),
                tracing=self.tracing,
                metrics=self.metrics,
                credentials=channel_credentials(self.settings),
            )
        return channel

    def client(self, service: str) -> ServiceClient:
        """The client for another service (one per name, sharing one connection pool)."""
        found = self._clients.get(service)
        if found is None:
            found = ServiceClient(
                service,
                self.discovery,
                http=self._shared_http(),
                timeout=self.settings.client_timeout,
                retry=RetryPolicy(attempts=self.settings.client_retries + 1),
                tracing=self.tracing,
            )
            self._clients[service] = found
        return found

    def _shared_http(self) -> PeerHttp:
        if self._http is None:
            self._http = http_client(self._tls)
        return self._http

    async def startup(self) -> None:
        s = self.settings
        if s.config_bucket:
            self.config = ConfigStore(
                s.config_bucket,
                nats_url=s.nats_url,
                cache_dir=s.config_cache_dir,
                retries=s.config_retries,
                replicas=s.bucket_replicas(),
            )
            await self.config.start()
            config = self.config
            self.health.add("config", lambda: _config_live(config), critical=False)
        if s.flags_bucket and s.flags_bucket != s.config_bucket:
            self._flag_store = ConfigStore(
                s.flags_bucket,
                nats_url=s.nats_url,
                cache_dir=s.config_cache_dir,
                retries=s.config_retries,
                replicas=s.bucket_replicas(),
            )
            await self._flag_store.start()
            self.flags = Flags(self._flag_store)
        elif self.config is not None:
            self.flags = Flags(self.config)
        if s.registry_bucket:
            await self._start_registry()

    async def _start_registry(self) -> None:
        s = self.settings
        assert s.registry_bucket is not None  # checked by the caller
        try:
            self._nc = await natsconn.connect(s.nats_url, name=self.name)
            self.registry = Registry(
                self._nc, bucket=s.registry_bucket, ttl=s.registry_ttl, replicas=s.bucket_replicas()
            )
            await self.registry.open()
        except Exception as exc:
            # Whatever broke (connection, JetStream, bucket), the service should still serve:
            # peers may find it by DNS or static config.
            _log.error("service registry unavailable; not registering %s: %s", self.name, exc)
            self.registry = None
            return
        if self._explicit_discovery is None:
            self.discovery = self._default_discovery()
            for client in self._clients.values():
                client.discovery = self.discovery
        if self._explicit_grpc_discovery is None:
            self.grpc_discovery = self._default_grpc_discovery()
            for channel in self._grpc_channels.values():
                channel.discovery = self.grpc_discovery

    async def register_self(self) -> None:
        """Put this instance in the registry (with ``advertise_url``), once it can serve.

        Called after the service's own start-up, not with the registry's opening: an instance
        registered while its database, bus and hooks still start is found by peers and gateways
        that then cannot connect, and a gateway's first failed health check keeps it out of the
        balancer for two more intervals (the cluster rehearsal's restarted node: 1-5 s)."""
        s = self.settings
        if self.registry is None or not s.advertise_url:
            return
        grpc_url = s.grpc_url()
        meta = {"grpc": grpc_url} if grpc_url else {}
        instance = Instance(self.name, s.advertise_url, meta=meta)
        if s.instance_id:
            instance = Instance(self.name, s.advertise_url, id=s.instance_id, meta=meta)
        self.registration = await self.registry.register(instance, keep_trying=True)
        _log.info("registered %s as %s at %s", self.name, instance.id, instance.url)

    async def shutdown(self) -> None:
        self.health.stopping = True
        if self.registration is not None:
            with contextlib.suppress(RegistryError):
                await self.registration.close()
            self.registration = None
        if self.settings.shutdown_grace > 0:
            await asyncio.sleep(self.settings.shutdown_grace)
        if self.grpc is not None:
            await self.grpc.stop(GRPC_STOP_GRACE)

    async def start_grpc(self) -> None:
        """Serve gRPC when ``grpc_port`` is set (see :mod:`edgeway.service.grpc.server`)."""
        if not self.settings.grpc_port:
            if self.grpc is not None and self.grpc.names:
                _log.info("%s declares gRPC servicers but grpc_port is 0: not serving gRPC", self.name)
            return
        await self._grpc_server().start()

    async def close(self) -> None:
        """Release connections; after the service's own lifespan has exited."""
        if self.grpc is not None:
            await self.grpc.stop(None)
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        for channel in self._grpc_channels.values():
            await channel.close()
        self._grpc_channels.clear()
        self._grpc_stubs.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._jwks_verifier is not None:
            await self._jwks_verifier.aclose()
        if self._fetch_http is not None:
            await self._fetch_http.aclose()
            self._fetch_http = None
        self.flags.close()
        for store in (self._flag_store, self.config):
            if store is not None:
                await store.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
        self.tracing.shutdown()


async def _config_live(store: ConfigStore) -> bool:
    # Serving the cached copy is degraded, not broken: reported, never failing readiness.
    return store.source == "store"


def create_app(
    name: str,
    *,
    settings: ServiceSettings | None = None,
    checks: Mapping[str, CheckFn] | None = None,
    lifespan: Lifespan | None = None,
    verifier: TokenVerifier | None = None,
    discovery: Discovery | None = None,
    tracing: Tracing | None = None,
    access_log: bool = True,
    quiet_paths: Iterable[str] = (),
    configure_logging: bool = True,
    cors_methods: Sequence[str] = CORS_METHODS,
    cors_headers: Sequence[str] = CORS_HEADERS,
    authenticated: Iterable[Callable[..., Any]] = (),
    grpc: Sequence[object] = (),
    grpc_discovery: Discovery | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app named ``name`` with the service kit wired in (see the module docstring).

    ``cors_methods``/``cors_headers``: what a browser on one of ``settings.cors_origins`` may send
    (answered to its preflight). ``authenticated``: the service's own dependencies that
    authenticate the caller, besides the kit's ``Caller`` (their operations declare 401 and 403).
    ``quiet_paths``: paths peers poll (a feed), access-logged at debug like health probes.
    ``grpc``: servicers served on ``settings.grpc_port`` (:mod:`edgeway.service.grpc`);
    ``grpc_discovery``: where the kit's gRPC clients find other services (default: the settings'
    ``grpc_services``, the environment, the registry, DNS)."""
    settings = settings if settings is not None else ServiceSettings.load()
    if not settings.service_name:
        settings = settings.model_copy(update={"service_name": name})
    kit = ServiceKit(
        name, settings, verifier=verifier, discovery=discovery, tracing=tracing, grpc_discovery=grpc_discovery
    )
    kit.grpc_access_log = access_log
    for check_name, fn in (checks or {}).items():
        kit.health.add(check_name, fn)
    for servicer in grpc:
        kit.add_grpc(servicer)

    @asynccontextmanager
    async def kit_lifespan(app: FastAPI) -> AsyncIterator[None]:
        if configure_logging:
            setup_logging(name, settings.log_level)
        await kit.startup()
        try:
            async with lifespan(app) if lifespan is not None else contextlib.nullcontext():
                await kit.start_grpc()
                if settings.gc_freeze:
                    freeze_heap()
                kit.health.started = True
                await kit.register_self()
                yield
                await kit.shutdown()
        finally:
            kit.health.stopping = True
            await kit.close()

    fastapi_kwargs.setdefault("title", name)
    app = offline_app(lifespan=kit_lifespan, **fastapi_kwargs)
    app.state.kit = kit
    app.state.edgeway_identity = kit.identity
    install_problem_handlers(app)
    declare_problems(app, authenticated=authenticated)
    app.include_router(kit.health.router())

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = kit.metrics.exposition()
        return Response(body, media_type=content_type)

    # Inside the request context (added first = inner), so their 400s and 504s are logged and
    # counted.
    app.add_middleware(JsonDepthMiddleware)
    app.add_middleware(DeadlineMiddleware)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=kit.metrics,
        tracing=kit.tracing,
        access_log=access_log,
        quiet_paths=quiet_paths,
    )
    if settings.cors_origins:
        # Outermost, so preflights are answered before the request context and auth run.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=list(cors_methods),
            allow_headers=list(cors_headers),
            expose_headers=["X-Request-ID", "Location"],
            max_age=600,
        )
    return app


def kit_of(app: FastAPI) -> ServiceKit:
    kit = getattr(app.state, "kit", None)
    if not isinstance(kit, ServiceKit):
        raise TypeError("this app was not made by edgeway.service.create_app")
    return kit


def _kit(request: Request) -> ServiceKit:
    return kit_of(request.app)


Kit = Annotated[ServiceKit, Depends(_kit)]
"""Declare ``kit: Kit`` in an endpoint to reach flags, config and clients."""
