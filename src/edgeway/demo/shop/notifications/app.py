"""Notifications: order e-mails from events, and bulk e-mail jobs that report progress over the bus.

The bulk job is the "send 10 e-mails, tell me when done" case: ``POST /jobs/emails`` answers
``202 Accepted`` at once with the job id and the topic (``jobs/<id>``) its progress is published
to; each e-mail sent moves ``done`` forward and publishes a ``JobProgress`` event (through the
outbox, in the same transaction), which a BFF pushes to the browser over its WebSocket. A client
without a socket polls ``GET /jobs/<id>``. Jobs survive a restart: unfinished ones resume where
they stopped, and e-mails are keyed so none is sent twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from email.message import EmailMessage
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from edgeway.bus.inbox import Inbox
from edgeway.demo.shop.common.copies import catalog_copy, serve_copy
from edgeway.demo.shop.common.demo_data import SHOP_EMAIL
from edgeway.demo.shop.common.events import CHANNELS, JobProgress, OrderStatusChanged
from edgeway.demo.shop.common.guards import sees_everything
from edgeway.demo.shop.common.settings import ShopSettings
from edgeway.demo.shop.notifications.maildir import Maildir
from edgeway.service import (
    Caller,
    Identity,
    Problem,
    ResourceIdPath,
    Service,
    SingleLine,
    is_single_line,
    location,
    problem_responses,
    service_of,
)
from edgeway.tasks import cancel_and_wait

log = logging.getLogger("shop.notifications")

metadata = MetaData()
emails = Table(
    "emails",
    metadata,
    Column("id", String(200), primary_key=True),  # the maildir key
    Column("to_addr", String(320), nullable=False, index=True),
    Column("subject", String(300), nullable=False),
    Column("kind", String(32), nullable=False),  # order | bulk
    Column("ref", String(64), nullable=True),  # order or job id
    Column("created_at", Float, nullable=False),
)
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(200), nullable=False, index=True),
    Column("to_addr", String(320), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # queued | running | completed | failed
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

JobStatus = Literal["queued", "running", "completed", "failed"]


class NotificationsSettings(ShopSettings):
    email_delay: float = Field(0.3, ge=0, description="seconds between two e-mails of a bulk job")


class BulkEmail(BaseModel):
    count: int = Field(10, ge=1, le=100, description="how many e-mails to send")
    # A header: CR/LF (or any control character) would fail every e-mail after the 202.
    subject: SingleLine = Field("Hello from the edgeway shop", min_length=1, max_length=200)
    body: str = Field("This is one of the e-mails you asked for.", max_length=10_000)


class Job(BaseModel):
    id: str
    owner: str
    total: int
    done: int
    status: JobStatus
    topic: str


class Email(BaseModel):
    id: str
    to: str
    subject: str
    kind: str
    ref: str | None
    created_at: float


class NotificationsService(Service):
    settings: NotificationsSettings

    def __init__(self, settings: NotificationsSettings | None = None) -> None:
        super().__init__(
            "notifications", metadata, settings or NotificationsSettings.load(), channels=CHANNELS
        )
        self.maildir = Maildir(self.settings.data_dir / "maildir")
        self.inbox = Inbox(self.db.sessions, metadata)
        self.catalog, _ = catalog_copy(self, metadata, group="notifications-catalog")
        self.bus.add_handler(
            OrderStatusChanged, self.on_order, group="notifications-orders", inbox=self.inbox
        )
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.on_startup(self.resume_jobs)
        self.on_shutdown(self.stop_jobs)

    # -- order e-mails ---------------------------------------------------------------------------

    async def on_order(self, event: OrderStatusChanged, session: AsyncSession, ctx: Any) -> None:
        if event.status not in ("confirmed", "cancelled") or not event.email:
            return
        names = {
            row.sku: row.name
            for row in (
                await session.execute(
                    select(self.catalog.c.sku, self.catalog.c.name).where(
                        self.catalog.c.sku.in_([str(i.get("sku")) for i in event.items])
                    )
                )
            ).all()
        }
        lines = [f"  {i.get('qty')} x {names.get(str(i.get('sku')), i.get('sku'))}" for i in event.items]
        if event.status == "confirmed":
            subject = f"Your order {event.order_id} is confirmed"
            text = (
                "Thank you! We are packing:\n"
                + "\n".join(lines)
                + f"\n\nTotal: {event.total_cents / 100:.2f}"
            )
        else:
            subject = f"Your order {event.order_id} was cancelled"
            text = (
                f"We could not complete your order: {event.reason or 'unknown reason'}.\nNothing was charged."
            )
        key = f"order-{event.order_id}-{event.status}"
        await self.send(session, key, event.email, subject, text, kind="order", ref=event.order_id)

    async def send(
        self, session: AsyncSession, key: str, to: str, subject: str, text: str, *, kind: str, ref: str | None
    ) -> None:
        """Deliver one e-mail (idempotent by ``key``) and record it in ``session``'s transaction."""
        message = EmailMessage()
        message["From"] = SHOP_EMAIL
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = f"<{key}@shop.edgeway.example>"
        message.set_content(text)
        self.maildir.deliver(key, message)
        found = await session.scalar(select(emails.c.id).where(emails.c.id == key))
        if found is None:
            await session.execute(
                emails.insert().values(
                    id=key, to_addr=to, subject=subject, kind=kind, ref=ref, created_at=time.time()
                )
            )

    # -- bulk jobs -------------------------------------------------------------------------------

    def start_job(self, job_id: str) -> None:
        if job_id not in self.tasks:
            task = asyncio.create_task(self._run_job(job_id), name=f"email-job-{job_id}")
            self.tasks[job_id] = task
            task.add_done_callback(lambda _t: self.tasks.pop(job_id, None))

    async def _run_job(self, job_id: str) -> None:
        try:
            while await self._send_next(job_id):
                await asyncio.sleep(self.settings.email_delay)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("e-mail job %s failed", job_id)
            async with self.transaction() as session:
                row = (await session.execute(select(jobs).where(jobs.c.id == job_id))).one()
                await self._progress(session, row, row.done, "failed")

    async def _send_next(self, job_id: str) -> bool:
        """Send the job's next e-mail; False when the job is finished."""
        async with self.transaction() as session:
            row = (await session.execute(select(jobs).where(jobs.c.id == job_id).with_for_update())).one()
            if row.status in ("completed", "failed"):
                return False
            n = row.done
            await self.send(
                session,
                f"job-{job_id}-{n + 1}",
                row.to_addr,
                f"{row.subject} ({n + 1}/{row.total})",
                row.body,
                kind="bulk",
                ref=job_id,
            )
            finished = n + 1 >= row.total
            await self._progress(session, row, n + 1, "completed" if finished else "running")
        return not finished

    async def _progress(self, session: AsyncSession, row: Any, done: int, status: JobStatus) -> None:
        await session.execute(
            update(jobs).where(jobs.c.id == row.id).values(done=done, status=status, updated_at=time.time())
        )
        await self.outbox.add(
            session,
            JobProgress(
                job_id=row.id, owner=row.owner, kind="emails", done=done, total=row.total, status=status
            ),
        )

    async def resume_jobs(self) -> None:
        async with self.db.sessions() as session:
            ids = (
                await session.scalars(select(jobs.c.id).where(jobs.c.status.in_(("queued", "running"))))
            ).all()
        for job_id in ids:
            log.info("resuming e-mail job %s", job_id)
            self.start_job(job_id)

    async def stop_jobs(self) -> None:
        await cancel_and_wait(*self.tasks.values())


def _svc(request: Request) -> NotificationsService:
    return service_of(request, NotificationsService)


Svc = Annotated[NotificationsService, Depends(_svc)]
router = APIRouter()


def create_app(settings: NotificationsSettings | None = None) -> FastAPI:
    service = NotificationsService(settings)
    app = service.create_app(
        title="notifications", description="E-mails to a maildir; bulk e-mail jobs with progress."
    )
    app.include_router(router)
    serve_copy(app, service, service.catalog)
    return app


def _job(row: Any) -> Job:
    return Job(
        id=row.id, owner=row.owner, total=row.total, done=row.done, status=row.status, topic=f"jobs/{row.id}"
    )


def _email_of(caller: Identity) -> str:
    email = caller.claims.get("email")
    if not isinstance(email, str) or "@" not in email or len(email) > 320 or not is_single_line(email):
        raise Problem(
            422, "your account has no e-mail address", type="https://shop.edgeway.example/problems/no-email"
        )
    return email


@router.post("/jobs/emails", status_code=202, responses=problem_responses(422))
async def bulk_emails(body: BulkEmail, svc: Svc, caller: Caller, response: Response) -> Job:
    """Start sending ``count`` e-mails to the caller; progress goes to topic ``jobs/<id>``."""
    now = time.time()
    job_id = f"job_{uuid.uuid4().hex[:16]}"
    row = {
        "id": job_id,
        "owner": caller.subject,
        "to_addr": _email_of(caller),
        "subject": body.subject,
        "body": body.body,
        "total": body.count,
        "done": 0,
        "status": "queued",
        "created_at": now,
        "updated_at": now,
    }
    async with svc.transaction() as session:
        await session.execute(jobs.insert().values(**row))
        await svc.outbox.add(
            session,
            JobProgress(
                job_id=job_id, owner=caller.subject, kind="emails", done=0, total=body.count, status="queued"
            ),
        )
    svc.start_job(job_id)
    response.headers["Location"] = location("jobs", job_id)
    return Job(
        id=job_id, owner=caller.subject, total=body.count, done=0, status="queued", topic=f"jobs/{job_id}"
    )


@router.get("/jobs/{job_id}")
async def get_job(job_id: ResourceIdPath, svc: Svc, caller: Caller) -> Job:
    async with svc.db.sessions() as session:
        row = (await session.execute(select(jobs).where(jobs.c.id == job_id))).first()
    if row is None or (row.owner != caller.subject and not sees_everything(caller)):
        raise Problem(404, f"no job {job_id}")
    return _job(row)


@router.get("/emails")
async def list_emails(
    svc: Svc,
    caller: Caller,
    to: str | None = None,
    ref: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[Email]:
    """E-mails sent: a customer sees those sent to them; support and admin see all."""
    query = select(emails).order_by(emails.c.created_at.desc()).limit(limit)
    if not sees_everything(caller):
        to = _email_of(caller)
    if to:
        query = query.where(emails.c.to_addr == to)
    if ref:
        query = query.where(emails.c.ref == ref)
    async with svc.db.sessions() as session:
        rows = (await session.execute(query)).all()
    return [
        Email(id=r.id, to=r.to_addr, subject=r.subject, kind=r.kind, ref=r.ref, created_at=r.created_at)
        for r in rows
    ]
