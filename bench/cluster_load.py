"""The rehearsal's client and its event probe.

:class:`Shopper` is a customer's app in front of two gateways, as a load balancer or a smart
client would be: it logs in once, then at a steady pace places orders (``POST /api/orders``
with one ``Idempotency-Key`` per checkout, so trying again is safe) and reads (the products,
an order it placed). Each operation starts at the next gateway in turn; a failed attempt (no
connection, no answer in time, 5xx, or 409 "being placed") is tried again on the other gateway
after a short jittered pause, as a well-behaved client would: at most ``max_attempts`` in all,
within the operation's deadline, and only while the client's retry budget allows (retries at
most 20 % of its recent requests plus one a second, :class:`edgeway.resilience.budget.RetryBudget`,
the gateway's own design for its upstreams). Without a budget, every failing operation retried
for 20 s and the client multiplied its load on a cluster that was already struggling; with it,
an outage shows as failed operations, which is what a real client would see. Like a load
balancer, the client also stops sending new attempts to a gateway it could not reach for
``EJECT_S`` seconds (:meth:`Shopper._eject`).
Operations are started on schedule whatever the earlier ones are doing (open loop), so a stuck
request shows up as one slow operation rather than as a pause in the load.

:class:`EventProbe` is one more consumer of the orders channel (its own durable group, on all
three NATS servers): every order event it receives, with the time, by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from bench.cluster_score import Delivery, Op
from bench.errors import BenchError
from edgeway.bus.bus import EventBus, Received
from edgeway.bus.nats import NatsTransport
from edgeway.demo.shop.common.demo_data import PRODUCTS
from edgeway.demo.shop.common.events import CHANNELS, OrderStatusChanged
from edgeway.demo.shop.common.problems import PROBLEMS
from edgeway.resilience.budget import BudgetPolicy, RetryBudget

RETRY_STATUSES = frozenset({500, 502, 503, 504})
DUPLICATE = PROBLEMS + "duplicate"  # 409: an order with this Idempotency-Key is being placed
PROBE_GROUP = "rehearsal-probe"
MAX_ATTEMPTS = 3
RETRY_BUDGET = BudgetPolicy(ratio=0.2, min_per_second=1.0, window=10.0)
BUDGET_SPENT = "retry budget spent"
EJECT_S = 2.0


class Shopper:
    def __init__(
        self,
        gateways: Sequence[str],
        clock: Callable[[], float],
        *,
        checkouts_per_s: float = 4.0,
        reads_per_s: float = 8.0,
        attempt_timeout: float = 6.0,
        deadline: float = 20.0,
        max_attempts: int = MAX_ATTEMPTS,
        retry_budget: BudgetPolicy = RETRY_BUDGET,
        max_in_flight: int = 300,
    ) -> None:
        self.gateways = list(gateways)
        self.clock = clock
        self.checkouts_per_s = checkouts_per_s
        self.reads_per_s = reads_per_s
        self.attempt_timeout = attempt_timeout
        self.deadline = deadline
        self.max_attempts = max_attempts
        self.budget = RetryBudget(retry_budget, clock=clock)
        self.retries = 0
        self.ejections = 0
        self._down_until: dict[int, float] = {}
        self.ops: list[Op] = []
        self.token = ""
        self._next = itertools.count()
        self._placed: list[str] = []
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(attempt_timeout, connect=1.0),
            limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=64),
        )
        self._random = random.Random(7)
        self._jitter = random.Random(11)

    async def login(self, username: str = "alice", password: str = "alice-pass") -> None:
        form = {
            "grant_type": "password",
            "username": username,
            "password": password,
            "client_id": "shop-web",
            "scope": "catalog orders notifications profile reviews",
        }
        last: Exception | None = None
        for gateway in self.gateways * 3:
            try:
                response = await self._http.post(f"{gateway}/api/oauth/token", data=form)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                last = exc
                await asyncio.sleep(0.5)
                continue
            self.token = str(response.json()["access_token"])
            return
        raise BenchError(f"cannot log in through the gateways: {last}")

    async def run(self, stop: asyncio.Event) -> None:
        """Start operations on schedule until ``stop``; then wait for those in flight."""
        await asyncio.gather(
            self._pace(stop, self.checkouts_per_s, self.checkout),
            self._pace(stop, self.reads_per_s, self.read),
        )
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def close(self) -> None:
        await self._http.aclose()

    async def _pace(self, stop: asyncio.Event, rate: float, op: Callable[[], Any]) -> None:
        if rate <= 0:
            return
        loop = asyncio.get_running_loop()
        interval = 1.0 / rate
        at = loop.time()
        while not stop.is_set():
            await self._slots.acquire()
            task = loop.create_task(self._one(op))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            at += interval
            pause = at - loop.time()
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    async def _one(self, op: Callable[[], Any]) -> None:
        try:
            self.ops.append(await op())
        finally:
            self._slots.release()

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}", **extra}

    async def checkout(self) -> Op:
        key = uuid.uuid4().hex
        items = [{"sku": self._random.choice(PRODUCTS).sku, "qty": self._random.randint(1, 2)}]
        outcome = await self._attempts(
            "POST", "/api/orders", json={"items": items}, headers=self._headers(**{"Idempotency-Key": key})
        )
        op = dataclasses.replace(outcome, kind="checkout", key=key)
        if op.order_id:
            self._placed.append(op.order_id)
        return op

    async def read(self) -> Op:
        if self._placed and self._random.random() < 0.5:
            path = f"/api/orders/{self._random.choice(self._placed[-50:])}"
        else:
            path = "/api/products"
        return dataclasses.replace(await self._attempts("GET", path, headers=self._headers()), kind="read")

    async def _attempts(self, method: str, path: str, **kwargs: Any) -> Op:
        start = self.clock()
        self.budget.record_request()
        first = next(self._next)
        order_ids: list[str] = []
        trail: list[str] = []  # "<gateway node> <outcome> <seconds>" per attempt
        status, error, attempt = 0, "", 0
        for attempt in itertools.count(1):
            index = self._gateway(first + attempt - 1)
            sent = self.clock()
            retry = False
            try:
                response = await self._http.request(method, self.gateways[index] + path, **kwargs)
            except httpx.TimeoutException as exc:
                status, error, retry = 0, f"timeout ({type(exc).__name__})", True
                self._eject(index, exc)
            except httpx.TransportError as exc:
                status, error, retry = 0, f"no answer ({type(exc).__name__})", True
                self._eject(index, exc)
            else:
                status = response.status_code
                error = "" if status < 300 else f"status {status}"
            trail.append(f"gw{index + 1} {error or status} {self.clock() - sent:.2f}")
            if 200 <= status < 300:
                order_id = _order_id(response) if method == "POST" else None
                if order_id:
                    order_ids.append(order_id)
                return Op(
                    "",
                    start,
                    self.clock(),
                    True,
                    attempt,
                    status,
                    order_id,
                    order_ids=tuple(order_ids),
                    trail=tuple(trail),
                )
            if status:
                retry = status in RETRY_STATUSES or (status == 409 and _problem_type(response) == DUPLICATE)
            pause = min(1.0, 0.1 * 2 ** (attempt - 1)) * self._jitter.uniform(0.5, 1.0)
            if not retry or attempt >= self.max_attempts or self.clock() + pause - start > self.deadline:
                break
            if not self.budget.try_spend():
                error = f"{error}; {BUDGET_SPENT}"
                break
            self.retries += 1
            await asyncio.sleep(pause)
        return Op(
            "",
            start,
            self.clock(),
            False,
            attempt,
            status,
            None,
            order_ids=tuple(order_ids),
            error=error,
            trail=tuple(trail),
        )

    def _gateway(self, turn: int) -> int:
        """The gateway for this turn of the rotation, passing over ejected ones (all ejected:
        the one whose turn it is)."""
        now = self.clock()
        count = len(self.gateways)
        for step in range(count):
            index = (turn + step) % count
            if self._down_until.get(index, 0.0) <= now:
                return index
        return turn % count

    def _eject(self, index: int, exc: Exception) -> None:
        """Passive health checking, as nginx's ``max_fails=1 fail_timeout`` or Envoy's outlier
        detection: a gateway that could not be reached, or connected but did not answer in time,
        gets no new attempts for ``EJECT_S``. Sending half the traffic to a dead gateway and
        retrying it elsewhere would spend the retry budget on a known failure."""
        if isinstance(
            exc, httpx.ReadTimeout | httpx.ConnectTimeout | httpx.ConnectError | httpx.RemoteProtocolError
        ):
            self._down_until[index] = self.clock() + EJECT_S
            self.ejections += 1

    def retry_report(self) -> dict[str, Any]:
        """How the client retried: its limits, the retries it made and those its budget refused."""
        policy = self.budget.policy
        return {
            "max_attempts": self.max_attempts,
            "deadline_s": self.deadline,
            "budget": {
                "ratio": policy.ratio,
                "min_per_second": policy.min_per_second,
                "window_s": policy.window,
            },
            "retries": self.retries,
            "retries_refused_by_budget": self.budget.exhausted,
            "gateway_ejections": self.ejections,
            "eject_s": EJECT_S,
        }

    async def warm_up(self, probe: EventProbe, per_gateway: int = 3, timeout: float = 90.0) -> None:
        """A few checkouts through each gateway, waited for until confirmed, before measuring:
        the first orders pay for tokens, connections and discovery that steady load does not."""
        placed = []
        for _ in range(per_gateway * len(self.gateways)):
            op = await self.checkout()
            if not op.ok or op.order_id is None:
                raise BenchError(f"a warm-up checkout failed: {op.error} ({', '.join(op.trail)})")
            placed.append(op.order_id)
        self._placed.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not set(placed) <= {d.order_id for d in probe.deliveries if d.status == "confirmed"}:
            if loop.time() > deadline:
                raise BenchError(f"the warm-up orders were not confirmed within {timeout:.0f} s")
            await asyncio.sleep(0.2)


def _order_id(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body["id"]) if isinstance(body, dict) and "id" in body else None


def _problem_type(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("type", "")) if isinstance(body, dict) else ""


class EventProbe:
    """A consumer group of its own on the orders channel, recording what arrives and when."""

    def __init__(self, nats_url: str, clock: Callable[[], float], prefix: str = "shop") -> None:
        # The channel as the services declare it (three replicas): declaring it otherwise would
        # resize the stream under them.
        channels = [dataclasses.replace(c, replicas=3) for c in CHANNELS if c.name == "orders"]
        self.bus = EventBus(
            NatsTransport(nats_url, prefix=prefix, client_name="rehearsal-probe"), channels=channels
        )
        self.clock = clock
        self.deliveries: list[Delivery] = []

        @self.bus.subscribe(OrderStatusChanged, group=PROBE_GROUP)
        async def record(event: OrderStatusChanged, ctx: Received) -> None:
            self.deliveries.append(Delivery("probe", ctx.id, event.order_id, event.status, self.clock()))

    async def start(self) -> None:
        await self.bus.start()

    async def stop(self) -> None:
        await self.bus.stop()
