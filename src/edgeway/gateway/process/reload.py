"""Live reload: swap a running gateway's config without dropping a request or a connection.

Triggers: a change of the config file's content (:mod:`edgeway.gateway.process.config_watch`),
``SIGHUP``, and ``POST /reload`` on the admin port. Every reload goes the same way:

1. The file is read and validated (off the event loop). An invalid config is *refused*: every
   issue is logged as ``file:line:col: key: message``, the running config stays, the admin call
   answers 422 with the issues.
2. A change to ``listen``, ``admin``, ``workers`` or ``limits`` needs a restart (the sockets and
   the connections' limits are set up once): such a config is refused too, naming the keys.
   Under ``listen``, the TLS certificates (their files' content too), the client CA bundle,
   HSTS and the HTTPS redirect's hosts reload (``Listen.fixed_settings``).
3. A new :class:`Gateway` is compiled beside the running one. Services whose config did not
   change keep their cluster: the same endpoints, pools and open connections (nothing
   reconnects). It gets the running one's metrics (same name) and its ``env.carried``, the
   state components keep across generations (traffic splits: weights set at run time, each
   side's counts). Its components (JWKS client, discovery, ...) start; if they fail, the new
   gateway is dropped and the running one stays.
4. The swap: the listener's handler becomes the new gateway's, for new connections and for the
   next request of every open one, in one step on the event loop; new TLS handshakes get the
   new certificates (prepared before the swap: a certificate OpenSSL refuses fails the reload).
   Requests already running finish on the old routes; open connections keep their certificate.
5. The old gateway retires in the background: once its requests in flight are done (or
   ``reload.drain_timeout`` passed) its components stop and the clusters it did not hand over
   close, each connection when its exchange ends.

Reloads are serialised. A reload asked for by a signal or the admin API always rebuilds (so a
JWKS or a DNS answer is fetched again, and the certificate files are read again); one from the
file watch applies only a real change, of the config or of a certificate, key or CA file.

:func:`request_reload` asks a running gateway process for a reload through its admin port (the
fault bench uses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from edgeway.gateway.config import ConfigError, ConfigIssue, GatewayConfig, load_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.errors import GatewayError
from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.process.admin_auth import find_token
from edgeway.gateway.process.config_watch import ConfigWatcher
from edgeway.gateway.upstream.clusters import Cluster
from edgeway.tasks import cancel_and_wait

__all__ = [
    "RESTART_KEYS",
    "ReloadRefused",
    "ReloadResult",
    "Reloader",
    "request_reload",
    "restart_issues",
]

_log = logging.getLogger("edgeway.gateway.process.reload")

RESTART_KEYS = ("listen", "admin", "workers", "limits")
Trigger = Literal["watch", "signal", "admin", "api"]
Status = Literal["applied", "unchanged", "refused", "failed"]
DRAIN_POLL = 0.05


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one reload did."""

    status: Status
    trigger: Trigger
    generation: int  # of the config serving after this reload (1 = the one started with)
    issues: tuple[ConfigIssue, ...] = ()
    detail: str = ""
    kept: tuple[str, ...] = ()  # services whose cluster (pools, connections) was kept
    rebuilt: tuple[str, ...] = ()  # services with a new cluster
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("applied", "unchanged")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "trigger": self.trigger,
            "generation": self.generation,
            "duration_ms": round(self.duration_ms, 1),
        }
        if self.status == "applied":
            out["services_kept"] = list(self.kept)
            out["services_rebuilt"] = list(self.rebuilt)
        if self.detail:
            out["detail"] = self.detail
        if self.issues:
            out["issues"] = [_issue_json(issue) for issue in self.issues]
        return out


def _issue_json(issue: ConfigIssue) -> dict[str, Any]:
    return {
        "file": issue.file,
        "line": issue.line,
        "column": issue.column,
        "key": issue.key_path,
        "message": issue.message,
        "text": str(issue),
    }


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json") if model is not None else None


def _upstream_tls_digests(config: GatewayConfig) -> dict[str, str]:
    """What each service's TLS files held when ``config`` was loaded."""
    return {name: svc.tls.material_digest() for name, svc in config.services.items() if svc.tls is not None}


def restart_issues(file: str, running: GatewayConfig, new: GatewayConfig) -> list[ConfigIssue]:
    """One issue per key under :data:`RESTART_KEYS` whose value changed."""
    issues: list[ConfigIssue] = []
    for key in RESTART_KEYS:
        for path, before, after in _differences(_dump_field(running, key), _dump_field(new, key), key):
            issues.append(
                ConfigIssue(
                    file,
                    None,
                    None,
                    path,
                    f"changed from {before!r} to {after!r}; this needs a restart of the gateway "
                    "(nothing was reloaded)",
                )
            )
    return issues


def _dump_field(config: GatewayConfig, key: str) -> Any:
    if key == "listen":
        return config.listen.fixed_settings()
    value = getattr(config, key)
    return value if isinstance(value, int) else _dump(value)


def _differences(before: Any, after: Any, path: str) -> list[tuple[str, Any, Any]]:
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in dict.fromkeys([*before, *after]):
            out += _differences(before.get(key), after.get(key), f"{path}.{key}")
        return out
    return [] if before == after else [(path, before, after)]


def reusable_clusters(running: Gateway, new: GatewayConfig) -> dict[str, Cluster]:
    """The running clusters of services whose config is the same in ``new``."""
    out: dict[str, Cluster] = {}
    for name, svc in new.services.items():
        old = running.config.services.get(name)
        if old is not None and name in running.clusters and _dump(old) == _dump(svc):
            out[name] = running.clusters[name]
    return out


class Reloader:
    """Reloads one running gateway from its config file (see the module docstring).

    ``install`` puts a new gateway in service (swaps the listener's handler, the admin
    API's gateway); ``prepare`` readies what the new config changes on the listeners (the
    TLS certificates) before the new gateway is built, raising GatewayError if it cannot, and
    returns what puts it in service right after ``install``; ``announce`` is called after a
    reload the admin API asked for, so a worker can have its siblings reload too.
    """

    def __init__(
        self,
        path: Path,
        gateway: Gateway,
        *,
        install: Callable[[Gateway], None],
        prepare: Callable[[GatewayConfig], Callable[[], None]] | None = None,
        events: AccessLog,
        sources: list[str] | None = None,
        announce: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.gateway = gateway
        self.generation = 1
        self.events = events
        self._install = install
        self._prepare = prepare
        self._announce = announce
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._pending: set[asyncio.Task[ReloadResult]] = set()
        settings = gateway.config.reload
        self.watcher: ConfigWatcher | None = None
        if settings.watch:
            self.watcher = ConfigWatcher(
                sources or [str(path)], float(settings.interval), lambda: self.reload("watch")
            )
        self._closed = False

    def start(self) -> None:
        if self.watcher is not None:
            self.watcher.start()

    def trigger(self, trigger: Trigger) -> None:
        """Reload in the background (from a signal handler)."""
        if self._closed:
            return
        task = asyncio.create_task(self.reload(trigger), name=f"reload-{trigger}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def reload(self, trigger: Trigger = "api") -> ReloadResult:
        async with self._lock:
            if self._closed:
                return ReloadResult(
                    "refused", trigger, self.generation, detail="the gateway is shutting down"
                )
            started = time.perf_counter()
            result = await self._reload(trigger)
            result = _with_duration(result, (time.perf_counter() - started) * 1000)
        self._report(result)
        if result.status == "applied" and trigger == "admin" and self._announce is not None:
            self._announce()
        return result

    async def _reload(self, trigger: Trigger) -> ReloadResult:
        sources: list[str] = []
        try:
            config = await asyncio.to_thread(load_config, self.path, sources=sources)
        except ConfigError as exc:
            return ReloadResult("refused", trigger, self.generation, exc.issues, "the new config is invalid")
        finally:
            if self.watcher is not None and sources:
                self.watcher.watch(sources)
        running = self.gateway
        issues = restart_issues(str(self.path), running.config, config)
        if issues:
            return ReloadResult("refused", trigger, self.generation, tuple(issues), "a restart is needed")
        if (
            trigger == "watch"
            and _dump(config) == _dump(running.config)
            and config.listen.material_digest() == running.config.listen.material_digest()
            and _upstream_tls_digests(config) == _upstream_tls_digests(running.config)
        ):
            return ReloadResult("unchanged", trigger, self.generation)
        commit: Callable[[], None] | None = None
        if self._prepare is not None:
            try:
                commit = self._prepare(config)
            except GatewayError as exc:
                issue = ConfigIssue(str(self.path), None, None, "listen.tls", str(exc))
                return ReloadResult(
                    "refused", trigger, self.generation, (issue,), "the new config is invalid"
                )
        reuse = reusable_clusters(running, config)
        try:
            metrics = running.env.metrics if config.name == running.config.name else None
            new = Gateway(
                config, self._access_log(config), reuse=reuse, metrics=metrics, carried=running.env.carried
            )
        except (GatewayError, ValueError, LookupError, ImportError) as exc:
            _log.exception("the new config could not be compiled")
            return ReloadResult(
                "failed", trigger, self.generation, detail=f"cannot compile the config: {exc}"
            )
        try:
            await new.start()
        except Exception as exc:  # a component's own error type: JWKS, Redis, NATS...
            _log.exception("the new config's components did not start")
            await _stop_quietly(new)
            return ReloadResult(
                "failed", trigger, self.generation, detail=f"the new config did not start: {exc!r}"
            )
        new.adopt_clusters()
        self._install(new)
        if commit is not None:
            commit()
        self.gateway = new
        running.hand_over(reuse)
        self.generation += 1
        retire = asyncio.create_task(self._retire(running, float(config.reload.drain_timeout)))
        self._retiring.add(retire)
        retire.add_done_callback(self._retiring.discard)
        rebuilt = tuple(name for name in config.services if name not in reuse)
        return ReloadResult("applied", trigger, self.generation, kept=tuple(reuse), rebuilt=rebuilt)

    def _access_log(self, config: GatewayConfig) -> AccessLog | None:
        current = self.gateway.access_log
        if not config.access_log.enabled:
            return None
        if current is not None and current.service == config.name:
            return current
        return AccessLog(config.name)

    async def _retire(self, old: Gateway, drain_timeout: float) -> None:
        deadline = time.monotonic() + drain_timeout
        while old.inflight and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL)
        if old.inflight:
            self.events.event(
                "warning",
                "old config stopped with requests still running",
                requests=old.inflight,
                drain_timeout_s=drain_timeout,
            )
        await _stop_quietly(old)

    def _report(self, result: ReloadResult) -> None:
        if self.gateway.access_log is not None:
            self.events = self.gateway.access_log
        fields = result.to_json()
        if result.status == "applied":
            self.events.event("info", "config reloaded", **fields)
        elif result.status == "unchanged":
            self.events.event("info", "config file changed, config unchanged", **fields)
        else:
            self.events.event("error", f"config reload {result.status}; the running config stays", **fields)
            for issue in result.issues:
                _log.error("config reload refused: %s", issue)
        self.events.flush()

    async def stop_watching(self) -> None:
        self._closed = True
        if self.watcher is not None:
            await self.watcher.stop()

    async def close(self) -> None:
        """After the listener drained: finish a reload under way, stop retiring gateways now."""
        await self.stop_watching()
        for task in list(self._pending):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._lock:
            for retiring in list(self._retiring):
                await cancel_and_wait(retiring)
            self._retiring.clear()


def _with_duration(result: ReloadResult, ms: float) -> ReloadResult:
    return ReloadResult(
        result.status,
        result.trigger,
        result.generation,
        result.issues,
        result.detail,
        result.kept,
        result.rebuilt,
        ms,
    )


async def _stop_quietly(gateway: Gateway) -> None:
    try:
        await gateway.stop()
    except Exception:
        _log.exception("stopping the old config's components failed")


# --------------------------------------------------------------------------- remote control


class ReloadRefused(GatewayError):
    """The gateway refused or failed the reload; ``result`` is its JSON answer."""

    def __init__(self, status: int, result: Mapping[str, Any]) -> None:
        self.status = status
        self.result = dict(result)
        issues = [str(i.get("text", i)) for i in result.get("issues", [])]
        detail = str(result.get("detail", ""))
        super().__init__(f"reload answered {status}: {detail}" + "".join(f"\n  {i}" for i in issues))


async def request_reload(
    host: str, port: int, *, token: str | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    """Ask the gateway whose admin API listens on ``host:port`` to reload its config file.

    ``token``: the admin token; by default the one :func:`~edgeway.gateway.process.admin_auth.find_token`
    finds (``EDGEWAY_ADMIN_TOKEN``, or the token a loopback gateway wrote for that port).
    Returns the JSON answer (``status``: ``applied`` or ``unchanged``, ``generation``...);
    raises :class:`ReloadRefused` when the config was refused or failed (401 without a valid
    token), ``OSError`` or ``TimeoutError`` when the admin port cannot be reached or does not
    answer.
    """
    token = token if token is not None else find_token(port)
    authorization = f"Authorization: Bearer {token}\r\n" if token else ""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"POST /reload HTTP/1.1\r\nHost: {host}:{port}\r\n{authorization}"
                "Content-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            # The admin API answers with a Content-Length and closes: read to the end.
            raw = await reader.read(-1)
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
        answer: dict[str, Any] = orjson.loads(body)
    except (IndexError, ValueError) as exc:
        raise ReloadRefused(0, {"detail": f"not an edgeway admin answer: {raw[:200]!r}"}) from exc
    if status != 200:
        raise ReloadRefused(status, answer)
    return answer
