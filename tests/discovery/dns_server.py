"""A real UDP DNS server for tests, answering from a zone the test changes while it runs.

dnspython cannot serve, so this builds answers with its message API. The zone maps
``(name, type)`` to ``(ttl, [record text])``; SRV answers carry the targets' address records in
the additional section when ``additional`` is on, as CoreDNS does for headless services.
``mode`` makes the server misbehave: ``"servfail"`` answers SERVFAIL, ``"drop"`` never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

Zone = dict[tuple[str, str], tuple[int, list[str]]]


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.additional = True
        self.mode = "ok"
        self.queries: Counter[tuple[str, str]] = Counter()
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        self.queries[(name, rdtype)] += 1
        if self.mode == "drop":
            return
        response = dns.message.make_response(query)
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif (name, rdtype) in self.zone:
            ttl, records = self.zone[(name, rdtype)]
            if records:
                response.answer.append(dns.rrset.from_text(name, ttl, "IN", rdtype, *records))
            if rdtype == "SRV" and self.additional:
                for record in records:
                    target = record.split()[-1]
                    for kind in ("A", "AAAA"):
                        if (target, kind) in self.zone:
                            t_ttl, addresses = self.zone[(target, kind)]
                            response.additional.append(
                                dns.rrset.from_text(target, t_ttl, "IN", kind, *addresses)
                            )
        elif not any(key[0] == name for key in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(response.to_wire(), addr)  # type: ignore[attr-defined]

    def resolver(self, timeout: float = 2.0) -> dns.asyncresolver.Resolver:
        res = dns.asyncresolver.Resolver(configure=False)
        res.nameservers = ["127.0.0.1"]
        res.port = self.port
        res.lifetime = timeout
        return res


@contextlib.asynccontextmanager
async def dns_server(zone: Zone) -> AsyncIterator[DnsServer]:
    server = DnsServer(zone)
    # Port 0: the kernel picks a free UDP port. (A port found free for TCP and bound later could
    # be taken, for UDP or meanwhile: "Address already in use" in CI.)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: server, local_addr=("127.0.0.1", 0)
    )
    server.port = int(transport.get_extra_info("sockname")[1])
    try:
        yield server
    finally:
        transport.close()
