"""New connections are accepted in the loop turn they arrive, however busy the loop is.

uvloop's ``create_server`` accepts one connection per event-loop turn; a gateway saturated by its
open connections runs turns of tens of milliseconds, so a thousand clients connecting at once
waited seconds in the kernel's accept queue while the connections already open were served (the
p99 of seconds in ``./dev bench slow``). The listener accepts every pending connection, up to
the backlog, each time the listening socket is readable.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest
import uvloop
from engine_helpers import echo

from edgeway.http.limits import ServerLimits
from edgeway.http.listener import Listener, bind_socket

LOOPS: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = [
    ("asyncio", asyncio.new_event_loop),
    ("uvloop", uvloop.new_event_loop),
]
CLIENTS = 50
TURN_S = 0.002  # the CPU a turn of a saturated gateway costs (much less than a real one)


async def turns_to_accept(listener: Listener, clients: int) -> int:
    """Loop turns, each busy for TURN_S, until ``clients`` connections are open at the listener."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    turns = 0

    def busy_turn() -> None:
        nonlocal turns
        turns += 1
        time.sleep(TURN_S)
        if len(listener.connections) >= clients or turns >= 10 * clients:
            done.set_result(turns)
        else:
            loop.call_soon(busy_turn)

    loop.call_soon(busy_turn)
    return int(await done)


@pytest.mark.parametrize("loop_factory", [f for _, f in LOOPS], ids=[n for n, _ in LOOPS])
def test_a_busy_listener_accepts_a_burst_of_clients_in_a_few_turns(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def main() -> int:
        listener = Listener(echo, ServerLimits())
        await listener.start(bind_socket("127.0.0.1", 0))
        # The kernel completes these handshakes on its own; they wait in the accept queue.
        clients = [socket.create_connection(("127.0.0.1", listener.port)) for _ in range(CLIENTS)]
        try:
            return await turns_to_accept(listener, CLIENTS)
        finally:
            for c in clients:
                c.close()
            await listener.shutdown(1.0)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        turns = runner.run(main())
    # Accepting, then the protocol's connection_made, take a turn or two each; one connection per
    # turn would take CLIENTS turns.
    assert turns <= 5, f"{CLIENTS} pending connections took {turns} loop turns to accept"
