"""How soon a NATS client notices that its server went silent.

A server that dies closes its connections and clients move to another at once. A server cut
off the network (a partition, a frozen VM, a dead switch port) closes nothing: the connection
stays open and quiet, and nats-py finds out only when ``max_outstanding_pings`` pings in a row
go unanswered. With its defaults (a ping every 120 s, 2 outstanding) that is four to six
minutes during which pulls, publishes and requests all wait on a server that cannot answer.

Here a ping goes out every 1.5 s and the third unanswered one declares the connection stale:
a silent server is left after 3 to 4.5 s, and a live server has to miss 3 s of pongs to be
taken for a dead one (a ping costs a few bytes a second per connection).

Reconnecting may pick the silent server again (nats-py walks its pool in order, and the kernel
of a frozen or cut-off host can still complete the TCP handshake): once connected, each attempt
waits ``RECONNECT_TIMEOUT`` for the server's greeting instead of the first connection's longer
timeout, so a silent server costs one second per pass, not five.

Every long-lived edgeway NATS connection uses these: the bus transport, the kit's registry and
config connection, and the gateway's push source.
"""

from __future__ import annotations

from typing import Any

PING_INTERVAL = 1.5
MAX_OUTSTANDING_PINGS = 2

RECONNECT_TIMEOUT = 1.0

# nats-py annotates ping_interval as int but takes seconds as a float.
LIVENESS: dict[str, Any] = {"ping_interval": PING_INTERVAL, "max_outstanding_pings": MAX_OUTSTANDING_PINGS}


def reconnect_forever(nc: Any, time_wait: float) -> None:
    """Once the first connection is up: reconnect without limit, ``time_wait`` seconds between
    passes over the servers, waiting ``RECONNECT_TIMEOUT`` for each (nats-py reads these options
    again on every disconnect)."""
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = time_wait
    nc.options["connect_timeout"] = RECONNECT_TIMEOUT
