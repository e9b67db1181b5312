"""Active health checks: ask every instance ``GET <path>`` on a timer, keep a verdict per instance.

A check passes on a 2xx or 3xx answer within ``timeout``; anything else fails it (refused,
reset, timed out, 4xx, 5xx). An instance becomes unhealthy after ``unhealthy_threshold`` failed
checks in a row and healthy again after ``healthy_threshold`` passed ones, so one lost packet
does not flap it. The first check of an instance decides alone, and :meth:`HealthChecker.start`
runs one round before returning, so a gateway never routes to an instance it has not seen
answer, and its readiness reflects the instances from the first moment.

Each check opens its own connection and closes it (``Connection: close``): a pooled connection
would be closed by the instance's keep-alive timer between checks and make the next one fail
for a reason that says nothing about the instance. Rounds are spread with a little jitter so a
fleet of gateways does not check in lockstep. An instance reached over TLS is checked over TLS,
with the same context and server name as its traffic: a certificate the traffic would refuse
fails the check too.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edgeway.http.errors import HttpError
from edgeway.http.limits import PoolLimits
from edgeway.http.pool import open_connection
from edgeway.http.upstream import UpstreamConnection
from edgeway.resilience.grpc_health import probe_grpc
from edgeway.tasks import cancel_and_wait

__all__ = ["HealthCheckPolicy", "HealthChecker", "HealthTrack", "Probed", "probe", "probe_grpc"]

_LIMITS = PoolLimits(max_connections=1)


@dataclass(frozen=True, slots=True)
class HealthCheckPolicy:
    kind: str = "http"  # "http": GET path; "grpc": grpc.health.v1.Health/Check (grpc_health.py)
    grpc_service: str = ""
    path: str = "/health/ready"
    interval: float = 5.0
    timeout: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError("path must start with '/'")
        if self.interval <= 0 or not 0 < self.timeout <= self.interval:
            raise ValueError("interval must be positive and timeout in (0, interval]")
        if self.healthy_threshold < 1 or self.unhealthy_threshold < 1:
            raise ValueError("thresholds must be at least 1")
        if self.kind not in ("http", "grpc"):
            raise ValueError(f"kind must be 'http' or 'grpc', not {self.kind!r}")


class Probed(Protocol):
    """What a check needs of an instance."""

    host: str
    port: int
    authority: bytes  # the Host header

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The context its connections handshake with; None: plaintext."""
        ...

    @property
    def server_hostname(self) -> str:
        """The name sent (SNI) and verified in its certificate."""
        ...


class HealthTrack:
    """One instance's verdict and the current run of results that may change it."""

    __slots__ = ("checked", "fails", "healthy", "passes", "reason")

    def __init__(self) -> None:
        self.healthy = True  # unchecked instances take traffic (a discovered one before its first round)
        self.checked = False
        self.passes = 0
        self.fails = 0
        self.reason = ""

    def __repr__(self) -> str:
        return f"<HealthTrack {'healthy' if self.healthy else 'unhealthy'} {self.reason!r}>"

    def record(self, passed: bool, reason: str, policy: HealthCheckPolicy) -> bool:
        """Count a result; True when it changed the verdict."""
        self.reason = reason
        was = self.healthy
        if passed:
            self.fails = 0
            self.passes += 1
            if not self.checked or self.passes >= policy.healthy_threshold:
                self.healthy = True
        else:
            self.passes = 0
            self.fails += 1
            if not self.checked or self.fails >= policy.unhealthy_threshold:
                self.healthy = False
        self.checked = True
        return was is not self.healthy


async def probe(target: Probed, path: str, timeout: float) -> tuple[bool, str]:
    """One check: (passed, reason); never raises for a failing instance."""
    instance = f"{target.host}:{target.port}"
    conn: UpstreamConnection | None = None
    try:
        async with asyncio.timeout(timeout):
            conn = await open_connection(
                lambda: UpstreamConnection(instance, _LIMITS, lambda _c: None),
                target.host,
                target.port,
                instance,
                target.tls,
                target.server_hostname,
            )
            conn.begin(head_request=False)
            conn.write(
                b"GET %b HTTP/1.1\r\nhost: %b\r\nuser-agent: edgeway-health-check\r\n"
                b"connection: close\r\n\r\n" % (path.encode(), target.authority)
            )
            conn.request_sent = True
            head = await conn.read_head()
    except TimeoutError:
        return False, f"no answer within {timeout:g}s"
    except OSError as exc:
        return False, f"cannot connect: {exc.strerror or exc}"
    except HttpError as exc:
        return False, str(exc)
    finally:
        if conn is not None:
            conn.close()
    if 200 <= head.status < 400:
        return True, f"{head.status}"
    return False, f"answered {head.status}"


class HealthChecker:
    """Checks a changing set of instances every ``interval``; a component (start/stop)."""

    def __init__(
        self,
        policy: HealthCheckPolicy,
        targets: Callable[[], Sequence[Probed]],
        on_result: Callable[[Probed, bool, str], None],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self._targets = targets
        self._on_result = on_result
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    def __repr__(self) -> str:
        what = f"grpc {self.policy.grpc_service!r}" if self.policy.kind == "grpc" else self.policy.path
        return f"<HealthChecker {what} every {self.policy.interval:g}s rounds={self.rounds}>"

    async def start(self) -> None:
        await self.check_all()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def check_all(self) -> None:
        """One round: every current instance, concurrently."""
        targets = list(self._targets())
        policy = self.policy
        if policy.kind == "grpc":
            checks = [probe_grpc(t, policy.grpc_service, policy.timeout) for t in targets]
        else:
            checks = [probe(t, policy.path, policy.timeout) for t in targets]
        results = await asyncio.gather(*checks)
        for target, (passed, reason) in zip(targets, results, strict=True):
            self._on_result(target, passed, reason)
        self.rounds += 1

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.policy.interval * self._rng.uniform(0.9, 1.1))
            await self.check_all()
