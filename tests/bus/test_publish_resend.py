"""A batch whose acks were lost is sent again; a batch whose acks are only slow is not.

The stream here is a plain NATS responder on a real embedded nats-server, so that the test
decides which copy of a message gets an answer, as a stream leader that stepped down before
answering would. A real cluster loses such an ack when a partition heals (the rehearsal's
finding 18, docs/cluster-rehearsal.md); a frozen or killed leader did not lose one in
``test_nats_failover``'s cluster, so it cannot stand in for it there.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest

from edgeway.bus.embedded import EmbeddedNats
from edgeway.bus.errors import PublishError
from edgeway.bus.nats.confirms import Confirms, Outgoing

pytestmark = pytest.mark.xdist_group("embedded-nats")

SUBJECT = "lossy.events"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    async with EmbeddedNats(port=0, data_dir=tmp_path / "nats") as running:
        yield running


class Stream:
    """Answers like a JetStream stream, except that it ignores the first ``drop`` copies of
    each message id; it may answer slowly, one message per ``pace`` seconds."""

    def __init__(self, drop: int = 0, pace: float = 0.0) -> None:
        self.drop = drop
        self.pace = pace
        self.copies: Counter[str] = Counter()
        self.stored: list[str] = []
        self._answers: asyncio.Queue[tuple[Any, bytes]] = asyncio.Queue()

    async def on_message(self, msg: Any) -> None:
        message_id = msg.headers["Nats-Msg-Id"]
        self.copies[message_id] += 1
        if self.copies[message_id] <= self.drop:
            return
        duplicate = message_id in self.stored
        if not duplicate:
            self.stored.append(message_id)
        answer = {"stream": "LOSSY", "seq": self.stored.index(message_id) + 1, "duplicate": duplicate}
        await self._answers.put((msg, orjson.dumps(answer)))

    async def answer(self) -> None:
        while True:
            msg, body = await self._answers.get()
            if self.pace:
                await asyncio.sleep(self.pace)
            await msg.respond(body)


async def _run(
    server: EmbeddedNats, stream: Stream, *, timeout: float, resend_after: float, count: int
) -> Confirms:
    nc = await nats.connect(server.url)
    answering = asyncio.create_task(stream.answer())
    try:
        await nc.subscribe(SUBJECT, cb=stream.on_message)
        confirms = Confirms(nc, timeout=timeout, resend_after=resend_after)
        await confirms.start()
        batch: list[Outgoing] = [(SUBJECT, b"{}", {"Nats-Msg-Id": f"m{i}"}, f"m{i}") for i in range(count)]
        await confirms.publish(batch)
        return confirms
    finally:
        answering.cancel()
        await nc.close()


async def test_a_batch_whose_acks_were_lost_is_sent_again_and_confirmed(server: EmbeddedNats) -> None:
    stream = Stream(drop=1)
    confirms = await _run(server, stream, timeout=30.0, resend_after=0.2, count=5)
    assert stream.stored == [f"m{i}" for i in range(5)], "each message is stored once, in order"
    assert set(stream.copies.values()) == {2}, f"each message was sent twice: {stream.copies}"
    assert confirms.resent == 5


async def test_a_copy_the_stream_already_stored_counts_as_its_ack(server: EmbeddedNats) -> None:
    # The first copy is stored but its answer is lost: the second is answered as a duplicate.
    stream = Stream()
    nc = await nats.connect(server.url)
    answering = asyncio.create_task(stream.answer())
    lost_once: set[str] = set()

    async def lose_first_answer(msg: Any) -> None:
        message_id = msg.headers["Nats-Msg-Id"]
        if message_id not in lost_once:
            lost_once.add(message_id)
            stream.copies[message_id] += 1
            stream.stored.append(message_id)
            return
        await stream.on_message(msg)

    try:
        await nc.subscribe(SUBJECT, cb=lose_first_answer)
        confirms = Confirms(nc, timeout=30.0, resend_after=0.2)
        await confirms.start()
        await confirms.publish([(SUBJECT, b"{}", {"Nats-Msg-Id": "only"}, "only")])
    finally:
        answering.cancel()
        await nc.close()
    assert stream.stored == ["only"]
    assert stream.copies["only"] == 2


async def test_a_batch_whose_acks_come_slowly_is_not_sent_again(server: EmbeddedNats) -> None:
    # 40 acks, one every 50 ms: two seconds in all, but never a whole second without one.
    stream = Stream(pace=0.05)
    confirms = await _run(server, stream, timeout=30.0, resend_after=1.0, count=40)
    assert confirms.resent == 0
    assert set(stream.copies.values()) == {1}


async def test_a_batch_nobody_answers_fails_at_the_timeout_after_backing_off(server: EmbeddedNats) -> None:
    stream = Stream(drop=1000)
    with pytest.raises(PublishError, match=r"no acknowledgement from JetStream within 1.5 s") as caught:
        await _run(server, stream, timeout=1.5, resend_after=0.2, count=2)
    assert caught.value.message_id == "m0"
    # Sent at 0, again at 0.2, 0.6 and 1.4 s at most (the pause doubles): never a flood.
    assert all(2 <= copies <= 4 for copies in stream.copies.values()), stream.copies
