"""The dead-letter channel: list, inspect and replay what a consumer group gave up on.

A dead letter keeps the original message (id, type, payload, headers), the group that failed,
the reason (the handler's exception, "expired", or "did not validate") and when. Replaying sends
the message again to *that group only* with a fresh attempt count, then removes the dead letter;
the message id is kept, so an inbox still recognises it if it was in fact processed.
"""

from __future__ import annotations

import builtins

from edgeway.bus.errors import DeadLetterNotFoundError
from edgeway.bus.transport import ChannelConfig, DeadLetter, Transport


class DeadLetters:
    """Dead letters of one channel on one transport (the transport must be connected)."""

    def __init__(self, transport: Transport, channel: ChannelConfig) -> None:
        self.transport = transport
        self.channel = channel

    async def list(self, group: str | None = None) -> builtins.list[DeadLetter]:
        """Oldest first; only ``group``'s when given."""
        letters = await self.transport.dead_letters(self.channel)
        return [d for d in letters if group is None or d.group == group]

    async def get(self, dead_letter_id: str) -> DeadLetter:
        for letter in await self.transport.dead_letters(self.channel):
            if letter.id == dead_letter_id:
                return letter
        raise DeadLetterNotFoundError(self.channel.name, dead_letter_id)

    async def replay(self, dead_letter_id: str) -> DeadLetter:
        """Send it back to its group, then remove it.

        In that order on purpose: a crash in between leaves the dead letter in place (replay it
        again; the inbox absorbs a double) rather than losing the message.
        """
        letter = await self.get(dead_letter_id)
        await self.transport.redeliver(self.channel, letter.group, letter.envelope)
        await self.transport.remove_dead_letter(self.channel, dead_letter_id)
        return letter

    async def replay_all(self, group: str | None = None) -> builtins.list[DeadLetter]:
        replayed = []
        for letter in await self.list(group):
            await self.transport.redeliver(self.channel, letter.group, letter.envelope)
            await self.transport.remove_dead_letter(self.channel, letter.id)
            replayed.append(letter)
        return replayed

    async def discard(self, dead_letter_id: str) -> DeadLetter:
        """Remove it for good."""
        return await self.transport.remove_dead_letter(self.channel, dead_letter_id)
