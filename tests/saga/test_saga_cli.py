"""``edgeway saga list|show|retry`` on a service's SQLite database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pydantic import BaseModel
from saga_helpers import QUICK_COMPENSATION, open_db
from typer.testing import CliRunner

from edgeway.cli import app
from edgeway.saga import Saga, StepContext, StepFailed
from edgeway.saga.cli import async_url


class Order(BaseModel):
    order_id: str


def _saga() -> Saga[Order]:
    saga = Saga("cli_order", Order)

    async def undo(ctx: StepContext[Order]) -> None:
        raise RuntimeError("refund service down")

    @saga.step("charge", compensate=undo, timeout=2, compensation_retry=QUICK_COMPENSATION)
    async def charge(ctx: StepContext[Order]) -> None:
        if ctx.data.order_id == "bad":
            raise StepFailed("declined")

    return saga


async def _two_sagas(directory: Path) -> tuple[str, str]:
    async with open_db("sqlite", directory) as db:
        db.prefix = "edgeway_saga"  # the default the CLI reads
        async with db.orchestrator([_saga()]) as orchestrator:
            ok = await orchestrator.run("cli_order", Order(order_id="good"))
            failed = await orchestrator.run("cli_order", Order(order_id="bad"))
            await orchestrator.wait(ok, timeout=10)
            await orchestrator.wait(failed, timeout=10)
    return ok, failed


def test_list_show_and_retry_a_failed_saga(tmp_path: Path) -> None:
    ok, failed = asyncio.run(_two_sagas(tmp_path))
    url = f"sqlite:///{tmp_path}/service.db"
    runner = CliRunner()

    listed = runner.invoke(app, ["saga", "list", "--db", url])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split()[:4] == ["ID", "NAME", "STATUS", "STEP"]
    assert {line.split()[0] for line in lines[1:]} == {ok, failed}

    attention = runner.invoke(app, ["saga", "list", "--attention", "--json"], env={"EDGEWAY_SAGA_DB": url})
    assert attention.exit_code == 0, attention.output
    rows = [json.loads(line) for line in attention.output.splitlines()]
    assert [(r["id"], r["status"]) for r in rows] == [(failed, "failed")]
    assert "refund service down" in rows[0]["error"]

    only_completed = runner.invoke(app, ["saga", "list", "--db", url, "--status", "completed", "--json"])
    assert [json.loads(line)["id"] for line in only_completed.output.splitlines()] == [ok]

    shown = runner.invoke(app, ["saga", "show", failed, "--db", url])
    assert shown.exit_code == 0, shown.output
    state = json.loads(shown.output)
    assert state["data"] == {"order_id": "bad"}
    assert state["steps"][0]["status"] == "compensation_failed"
    assert state["steps"][0]["compensation_attempts"] == 3

    retried = runner.invoke(app, ["saga", "retry", failed, "--db", url])
    assert retried.exit_code == 0, retried.output
    again = json.loads(runner.invoke(app, ["saga", "show", failed, "--db", url]).output)
    assert again["status"] == "compensating"
    assert again["owner"] is None
    assert again["steps"][0]["compensation_failures"] == 0


def test_errors_name_what_is_wrong(tmp_path: Path) -> None:
    runner = CliRunner()
    no_db = runner.invoke(app, ["saga", "list"], env={"EDGEWAY_SAGA_DB": ""})
    assert no_db.exit_code == 2
    assert "pass --db or set EDGEWAY_SAGA_DB" in no_db.output

    url = f"sqlite:///{tmp_path}/empty.db"
    no_tables = runner.invoke(app, ["saga", "list", "--db", url])
    assert no_tables.exit_code == 1
    assert "cannot read the saga tables (edgeway_saga*)" in no_tables.output

    asyncio.run(_two_sagas(tmp_path))
    url = f"sqlite:///{tmp_path}/service.db"
    unknown = runner.invoke(app, ["saga", "show", "nope", "--db", url])
    assert unknown.exit_code == 1
    assert "no saga 'nope'" in unknown.output
    not_failed = runner.invoke(app, ["saga", "retry", "nope", "--db", url])
    assert "no saga 'nope'" in not_failed.output

    assert async_url("sqlite:///a.db") == "sqlite+aiosqlite:///a.db"
    assert async_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"
