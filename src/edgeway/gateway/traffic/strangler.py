"""The progressive strangler: moves a route from an old service to a new one in steps, advancing
on a schedule while the new side does as well as the old one, rolling back when it does not.

Each rule (``proxy.strangler``) drives its route's :class:`~.split.Split` (the old side and the
new one). Its state — the step, a status, since when — lives in the shared store
(:mod:`.strangler_store`), not in the process: every ``check_interval`` each gateway process

1. reads the state, and applies its step to its own split (so a fleet sharing the store moves
   together, each process within one interval of the change);
2. samples its split's outcomes, and judges the new side against the old one
   (:mod:`.strangler_judge`):

   - over the last ``window`` (never before the step began): a breach rolls the rule back — to
     the last good step (the one before) or to the start, as ``rollback_to`` says — and holds it
     there (``rolled_back``) until an operator resumes or advances it. A rule held after a
     rollback is still judged: if the new side still does worse, it goes back further;
   - over the whole step, once ``step_duration`` has passed: good (``min_requests`` served
     within the limits) advances it to the next step; too few requests holds it;

3. writes a decision by compare-and-set on the version it read: of two processes deciding at
   once one wins, the other applies the winner's state at its next check.

Statuses: ``running`` (advancing on schedule), ``paused`` (an operator's hold: the step stays,
nothing is judged), ``rolled_back`` (held after a rollback), ``complete`` (the last step, 100 %).
An operator's commands (:meth:`StranglerRun.command`, the admin API's ``POST
/strangler/<route>/<command>``): ``pause``, ``resume``, ``advance`` (the next step now) and
``rollback`` (everything back on the old side, held). A rule resumed before its first step (a
``paused`` start, a rollback to the start) goes to the first step at its next check.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from edgeway.gateway.traffic.split import Outcomes, Split
from edgeway.gateway.traffic.strangler_config import StranglerRule
from edgeway.gateway.traffic.strangler_judge import judge
from edgeway.gateway.traffic.strangler_store import StoreUnavailable, StranglerStateStore
from edgeway.tasks import cancel_and_wait

__all__ = ["COMMANDS", "RuleState", "StranglerCommandError", "StranglerRun"]

log = logging.getLogger("edgeway.gateway.traffic.strangler")

Status = Literal["running", "paused", "rolled_back", "complete"]
STATUSES: tuple[Status, ...] = ("running", "paused", "rolled_back", "complete")
COMMANDS = ("pause", "resume", "advance", "rollback")
_SWAP_ATTEMPTS = 5  # an operator's command against concurrent writers
# How long a starting gateway waits for the store's first answer before serving at the rule's start.
FIRST_CHECK_TIMEOUT = 2.0


class StranglerCommandError(ValueError):
    """A command the rule cannot take in its state (``advance`` past the last step, ...)."""


@dataclass(frozen=True, slots=True)
class RuleState:
    """A rule's shared state (as stored: :meth:`to_json`)."""

    step: int  # index into the rule's steps; -1: before the first (the new side takes nothing)
    status: Status
    since: float  # wall-clock time the step (or the status) began
    version: int
    reason: str
    changed_by: str
    rollbacks: int
    definition: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuleState:
        return cls(
            step=int(data["step"]),
            status=data["status"] if data.get("status") in STATUSES else "paused",
            since=float(data["since"]),
            version=int(data["version"]),
            reason=str(data.get("reason", "")),
            changed_by=str(data.get("changed_by", "")),
            rollbacks=int(data.get("rollbacks", 0)),
            definition=dict(data.get("definition", {})),
        )


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class StranglerRun:
    """One rule in one gateway process (see the module docstring)."""

    def __init__(
        self,
        route: str,
        rule: StranglerRule,
        split: Split,
        store: StranglerStateStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.route = route
        self.rule = rule
        self.split = split
        self.store = store
        self.clock = clock
        self.monotonic = monotonic
        self.state: RuleState | None = None  # the last read or written
        self.store_error: str | None = None  # the last failure to reach the store, until it answers
        self.note = ""  # why this process holds a step it could leave (too few requests)
        self._applied: int | None = None  # the step this process's split has
        self._samples: deque[tuple[float, dict[str, Outcomes]]] = deque()
        self._step_base: dict[str, Outcomes] = {}
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = self.state
        return f"<StranglerRun {self.route}: {state.status if state else '?'} step {self.percent:g}%>"

    # -- the state -------------------------------------------------------------------------------
    def percent_of(self, step: int) -> float:
        return 0.0 if step < 0 else float(self.rule.steps[step])

    @property
    def percent(self) -> float:
        """The new side's share in force in this process."""
        return float(self.split.weights[self.rule.new])

    def _initial(self, version: int) -> RuleState:
        running = self.rule.start == "running"
        return RuleState(
            step=0 if running else -1,
            status="running" if running else "paused",
            since=self.clock(),
            version=version,
            reason="started" if running else "started paused",
            changed_by=_me(),
            rollbacks=0,
            definition=self.rule.definition,
        )

    async def read(self) -> RuleState:
        """The shared state (written first when there is none, or the stored one is of another
        definition of the rule), applied to this process's split."""
        for _ in range(_SWAP_ATTEMPTS):
            stored = await self.store.get(self.route)
            found = RuleState.from_json(stored) if stored is not None else None
            if found is not None and found.definition == self.rule.definition:
                self._apply(found)
                return found
            fresh = self._initial(found.version + 1 if found is not None else 1)
            if await self.store.swap(
                self.route, found.version if found is not None else None, fresh.to_json()
            ):
                log.info(
                    "strangler %s: %s at %g%% (%s)",
                    self.route,
                    fresh.status,
                    self.percent_of(fresh.step),
                    fresh.reason,
                )
                self._apply(fresh)
                return fresh
        raise StoreUnavailable(f"strangler {self.route}: the store's state kept changing under this gateway")

    def _apply(self, state: RuleState) -> None:
        self.state = state
        if self._applied == state.step:
            return
        pct = self.percent_of(state.step)
        self.split.set_weights({self.rule.old: 100.0 - pct, self.rule.new: pct})
        self._applied = state.step
        # A new step is judged on its own traffic only.
        self._samples.clear()
        self._step_base = self.split.outcomes()

    async def _write(self, current: RuleState, **changes: Any) -> bool:
        new = replace(current, version=current.version + 1, changed_by=_me(), **changes)
        if not await self.store.swap(self.route, current.version, new.to_json()):
            return False
        log.log(
            logging.WARNING if new.status == "rolled_back" else logging.INFO,
            "strangler %s: %s at %g%% (%s)",
            self.route,
            new.status,
            self.percent_of(new.step),
            new.reason,
        )
        self._apply(new)
        return True

    # -- the check ---------------------------------------------------------------------------------
    async def check(self) -> None:
        """One check (see the module docstring): read and apply the shared state, judge, write
        what was decided."""
        state = await self.read()
        now_mono = self.monotonic()
        outcomes = self.split.outcomes()
        samples = self._samples
        samples.append((now_mono, outcomes))
        # Keep the newest sample at or before the window's start: the window's baseline.
        while len(samples) > 1 and samples[1][0] <= now_mono - float(self.rule.window):
            samples.popleft()
        rule = self.rule
        if state.status in ("running", "rolled_back") and state.step >= 0:
            base = samples[0][1]
            verdict = judge(rule, outcomes[rule.old] - base[rule.old], outcomes[rule.new] - base[rule.new])
            if verdict.breach is not None:
                back = state.step - 1 if rule.rollback_to == "last_good" else -1
                await self._write(
                    state,
                    step=back,
                    status="rolled_back",
                    since=self.clock(),
                    reason=f"rolled back from {self.percent_of(state.step):g}%: {verdict.breach}",
                    rollbacks=state.rollbacks + 1,
                )
                return
        if state.status == "running" and state.step < 0:
            # Resumed before the first step: nothing of the new side to judge yet.
            await self._advance(state, f"{self.percent_of(0):g}%: the first step")
            return
        if state.status != "running" or self.clock() - state.since < float(rule.step_duration):
            return
        base = self._step_base
        verdict = judge(rule, outcomes[rule.old] - base[rule.old], outcomes[rule.new] - base[rule.new])
        self.note = ""
        if verdict.good:
            await self._advance(
                state, f"{self.percent_of(state.step):g}% held for {rule.step_duration:g}s within the limits"
            )
        elif not verdict.judged:
            served = (outcomes[rule.new] - base[rule.new]).requests
            self.note = (
                f"waiting for {rule.min_requests} requests on {rule.new} at this step ({served} so far)"
            )

    async def _advance(self, state: RuleState, reason: str) -> bool:
        step = state.step + 1
        last = step == len(self.rule.steps) - 1
        status: Status = "complete" if last else ("paused" if state.status == "paused" else "running")
        return await self._write(state, step=step, status=status, since=self.clock(), reason=reason)

    # -- an operator's commands ----------------------------------------------------------------------
    async def command(self, name: str) -> RuleState:
        """Apply an operator's command (``pause``, ``resume``, ``advance``, ``rollback``) to the
        shared state; the state after it. StranglerCommandError when the rule cannot take it."""
        if name not in COMMANDS:
            raise StranglerCommandError(f"unknown command {name!r} (commands: {', '.join(COMMANDS)})")
        for _ in range(_SWAP_ATTEMPTS):
            state = await self.read()
            now = self.clock()
            if name == "pause":
                if state.status == "complete":
                    raise StranglerCommandError(f"strangler {self.route} is complete: nothing to pause")
                done = await self._write(state, status="paused", since=now, reason="paused by an operator")
            elif name == "resume":
                if state.status == "complete":
                    raise StranglerCommandError(f"strangler {self.route} is complete: nothing to resume")
                done = await self._write(state, status="running", since=now, reason="resumed by an operator")
            elif name == "advance":
                if state.step >= len(self.rule.steps) - 1:
                    raise StranglerCommandError(f"strangler {self.route} is at its last step (100%)")
                after = self.percent_of(state.step + 1)
                done = await self._advance(
                    replace(state, status="paused" if state.status == "paused" else "running"),
                    f"advanced to {after:g}% by an operator",
                )
            else:
                done = await self._write(
                    state,
                    step=-1,
                    status="rolled_back",
                    since=now,
                    reason="rolled back by an operator",
                    rollbacks=state.rollbacks + 1,
                )
            if done:
                assert self.state is not None
                return self.state
        raise StoreUnavailable(f"strangler {self.route}: the store's state kept changing; try again")

    # -- running -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Read (or set) the agreed step before the gateway serves, then check on the schedule.

        The first check is awaited: a gateway that started serving before it knew the fleet's
        step would send its first requests by a split nobody agreed on. A store that does not
        answer within :data:`FIRST_CHECK_TIMEOUT` leaves the step where the rule starts, and the
        loop keeps trying."""
        try:
            await asyncio.wait_for(self._check_once(), FIRST_CHECK_TIMEOUT)
        except TimeoutError:
            log.warning(
                "strangler %s: the store did not answer within %gs; serving at %g%% until it does",
                self.route,
                FIRST_CHECK_TIMEOUT,
                self.percent,
            )
        self._task = asyncio.create_task(self._loop(), name=f"strangler:{self.route}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(float(self.rule.check_interval))
            await self._check_once()

    async def _check_once(self) -> None:
        try:
            await self.check()
            if self.store_error is not None:
                log.info("strangler %s: the store answers again", self.route)
                self.store_error = None
        except StoreUnavailable as exc:
            if self.store_error is None:
                log.warning("strangler %s: %s; the step stays %g%%", self.route, exc, self.percent)
            self.store_error = str(exc)
        except Exception:  # a bug must not stop the rule's checks for good
            log.exception("strangler %s: check failed", self.route)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view (for the admin API)."""
        state = self.state
        outcomes = self.split.outcomes()
        return {
            "route": self.route,
            "old": self.rule.old,
            "new": self.rule.new,
            "steps": list(self.rule.steps),
            "step": state.step if state is not None else None,
            "percent": self.percent,
            "status": state.status if state is not None else "unknown",
            "since": state.since if state is not None else None,
            "reason": state.reason if state is not None else "",
            "version": state.version if state is not None else None,
            "changed_by": state.changed_by if state is not None else None,
            "rollbacks": state.rollbacks if state is not None else 0,
            "store_error": self.store_error,
            "note": self.note,
            "sides": {service: o.to_json() for service, o in outcomes.items()},
        }
