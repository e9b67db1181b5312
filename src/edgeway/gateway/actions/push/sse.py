"""Push over Server-Sent Events: ``GET /push?topic=jobs/42`` answered as ``text/event-stream``.

Every topic is checked before the stream starts: one refused topic answers the whole request
with its problem (400, 401, 403 or 429) instead of a stream. Then each message is an event with
its ``id`` and ``event`` name; a comment line every ``heartbeat`` keeps proxies from closing a
quiet stream. A client that reconnects with ``Last-Event-ID`` (browsers' EventSource do) or
``?last_event_id=`` gets the kept messages it missed; ``?replay=1`` asks for every kept message.

A slow client's overflow (503) or an expired token (401) ends the stream with ``event: error``
and a problem as data; a server shutdown with ``event: close``. Then the response ends; a client
that does not take that last event within ``close_timeout`` (it stopped reading) is cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import NoReturn
from urllib.parse import parse_qsl

import orjson

from edgeway.gateway.actions.push.messages import PushMessage
from edgeway.gateway.actions.push.session import Channel, Ending, Refusal, Session
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import RequestContext
from edgeway.http.errors import ClientDisconnected
from edgeway.http.exchange import Exchange

_HEARTBEAT = b": keep-alive\n\n"


async def serve_sse(ctx: RequestContext, channel: Channel) -> None:
    ex = ctx.ex
    if ex.method != b"GET":
        raise Rejection(
            405, "Method Not Allowed", "a push channel is read with GET", headers=[(b"allow", b"GET")]
        )
    query = parse_qsl(ex.query.decode("latin-1"))
    topics = list(dict.fromkeys(value for name, value in query if name == "topic"))
    if not topics:
        raise Rejection(400, "Bad Request", "name at least one topic: ?topic=jobs/42")
    session = Session(channel, ctx.identity, "sse")
    streaming = False
    try:
        if len(topics) > channel.max_subscriptions:
            _refuse(Refusal(429, "Too Many Subscriptions", f"at most {channel.max_subscriptions} topics"))
        rules = []
        for topic in topics:
            found = session.check(topic)
            if isinstance(found, Refusal):
                _refuse(found, topic)
            rules.append(found[0])
        options = dict(query)
        last_event_id = (ex.header(b"last-event-id") or b"").decode("latin-1") or options.get("last_event_id")
        after = session.resume_point(topics, last_event_id)
        replay = options.get("replay") in ("1", "true")
        ex.start(
            200,
            [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),  # nginx in front: do not buffer the stream
                (b"x-request-id", ex.request_id),
                (b"traceparent", ctx.traceparent),
            ],
            first=b"retry: %d\n\n" % channel.retry_ms,
        )
        streaming = True
        ex.on_server_shutdown(session.shutdown)
        ex.log["push"] = "sse"
        for topic, rule in zip(topics, rules, strict=True):
            session.subscribe(topic, rule, after, replay)
        await _stream(ctx, session, channel)
    finally:
        ex.on_server_shutdown(None)
        if streaming and session.active():
            # the client went away and the exchange was cancelled while the stream waited
            session.end(Ending.CLIENT)
        session.detach()
        ex.log["push_sent"] = session.sent
        ex.log["push_end"] = session.ending.value if session.ending else None


def _refuse(refusal: Refusal, topic: str | None = None) -> NoReturn:
    if topic is None:
        raise Rejection(refusal.status, refusal.title, refusal.detail)
    raise Rejection(refusal.status, refusal.title, refusal.detail, topic=topic)


async def _stream(ctx: RequestContext, session: Session, channel: Channel) -> None:
    ex = ctx.ex
    loop = asyncio.get_running_loop()
    last_write = last_event = loop.time()
    try:
        while session.active():
            now = loop.time()
            left = session.seconds_left()
            if left is not None and left <= 0:
                session.end(Ending.EXPIRED)
                break
            if channel.idle_timeout is not None and now - last_event >= channel.idle_timeout:
                session.end(Ending.IDLE)
                break
            wait = last_write + channel.heartbeat - now
            if channel.idle_timeout is not None:
                wait = min(wait, last_event + channel.idle_timeout - now)
            if left is not None:
                wait = min(wait, left)
            if ex.write_paused():
                # The client does not read: write nothing more until its socket drains. Its
                # messages queue meanwhile, and an overflow ends the session and this wait.
                await _drained(ex, session, max(0.0, wait))
                continue
            events = [item.sse_event() for item in iter(session.take, None) if isinstance(item, PushMessage)]
            if events:
                ex.write(events[0] if len(events) == 1 else b"".join(events))  # one chunk per wake-up
                last_write = last_event = now
                continue
            if wait <= 0:
                ex.write(_HEARTBEAT)
                last_write = now
                continue
            session.wakeup.clear()
            if session.pending() or not session.active():
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await session.wakeup.wait()
        await _end(ctx, session)
    except ClientDisconnected:
        session.end(Ending.CLIENT)


async def _drained(ex: Exchange, session: Session, timeout: float) -> None:
    """Wait for the client's socket to drain, the session to end or ``timeout``, whichever is first.

    Only a paused socket gets here (a client not reading), so the two tasks are no cost of the
    common path. A lost connection raises ClientDisconnected from the drain.
    """
    drain = asyncio.ensure_future(ex.drain())
    ended = asyncio.ensure_future(session.ended.wait())
    try:
        await asyncio.wait((drain, ended), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (drain, ended):
            task.cancel()
    if drain.done() and not drain.cancelled():
        drain.result()


def _error_event(ctx: RequestContext, status: int, title: str, detail: str) -> None:
    problem = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ctx.ex.write(b"event: error\ndata: " + orjson.dumps(problem) + b"\n\n")
    ctx.ex.close_after = True


async def _end(ctx: RequestContext, session: Session) -> None:
    ex = ctx.ex
    ending = session.ending
    if ending is Ending.SHUTDOWN:
        while (item := session.take()) is not None:
            if isinstance(item, PushMessage):
                ex.write(item.sse_event())
        ex.write(b"event: close\ndata: " + orjson.dumps({"reason": ending.value}) + b"\n\n")
    elif ending is Ending.OVERFLOW:
        detail = f"more than {session.channel.queue_size} messages waited for this client"
        _error_event(ctx, 503, "Slow Consumer", detail)
    elif ending is Ending.EXPIRED:
        _error_event(ctx, 401, "Unauthorized", "the token expired; reconnect with a fresh one")
    elif ending is Ending.REVOKED:
        _error_event(ctx, 401, "Unauthorized", "the token was revoked; sign in again")
    if ex.write_paused():
        # A client that stopped reading gets close_timeout to take the last event, then is cut
        # off: closing the socket normally would wait for it to read first, forever.
        try:
            async with asyncio.timeout(session.channel.close_timeout):
                await ex.drain()
        except TimeoutError:
            session.cut_off()
            ex.abort()
            return
    ex.finish()
