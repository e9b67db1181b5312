"""A bus starting while JetStream cannot answer yet waits for it (bounded) instead of failing.

A service restarted while its NATS cluster catches up found JetStream timing out or answering
503 for a few seconds, and exited at start-up (docs/cluster-rehearsal.md, finding 4). Here the
server runs without JetStream, so its API answers 503 (no responder) for as long as the test
wants.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from edgeway.bus.embedded import EmbeddedNats
from edgeway.bus.errors import TransportError
from edgeway.bus.nats import NatsTransport
from edgeway.bus.transport import ChannelConfig

pytestmark = pytest.mark.xdist_group("embedded-nats")


class _WithoutJetStream(EmbeddedNats):
    def command(self, ports_dir: Path | None = None) -> list[str]:
        return [arg for arg in super().command(ports_dir) if arg != "-js"]


async def test_a_declaration_is_retried_while_jetstream_cannot_answer_bounded_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _WithoutJetStream(port=0, data_dir=tmp_path / "bare") as bare:
        transport = NatsTransport(bare.url, prefix="dr", declare_timeout=1.5)
        await transport.connect()
        started = time.monotonic()
        try:
            with (
                caplog.at_level(logging.DEBUG, logger="edgeway.bus.nats"),
                pytest.raises(TransportError, match="cannot declare stream DR_pings"),
            ):
                await transport.declare(ChannelConfig("pings"))
        finally:
            await transport.close()
    # Retried for declare_timeout (before: failed at the first 503), then the error as before.
    assert 1.4 < time.monotonic() - started < 6
    retries = [r for r in caplog.records if "cannot declare stream DR_pings yet" in r.getMessage()]
    assert len(retries) >= 3
    assert [r.levelno for r in retries if r.levelno >= logging.WARNING] == [logging.WARNING]
