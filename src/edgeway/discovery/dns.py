"""Instances from DNS: address records (A/AAAA) on a known port, or SRV records carrying host and
port per instance, as Kubernetes headless services publish them
(``_http._tcp.orders.shop.svc.cluster.local``).

- :class:`DnsSource` watches one name for the gateway: it re-resolves when the answer's TTL
  runs out (bounded by ``min_ttl`` and ``max_ttl``), yields the set when it changed, and keeps
  the last good set while the DNS servers fail. SRV targets are resolved to addresses with the
  same resolver (from the answer's additional section when the server put them there), so a
  cluster's endpoints are addresses and connecting never asks the system resolver.
- :class:`DnsDiscovery` resolves by service name for the service kit: SRV ``_http._tcp.<name>``
  first, then A/AAAA on a default port.

An authoritative "no such name" or "no records" is an empty set (the service has no instances);
a timeout or failing servers are a :class:`DiscoveryError`. SRV priorities and weights order
the instances but are not honoured as fail-over groups or shares: every target gets an equal
share of the requests (Kubernetes publishes equal ones).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from edgeway.discovery.errors import DiscoveryError
from edgeway.discovery.source import Backoff, instance_url, reraise_cancellation

__all__ = ["DnsAnswer", "DnsDiscovery", "DnsSource", "make_resolver"]

_log = logging.getLogger("edgeway.discovery.dns")

RecordType = Literal["A", "SRV"]


def make_resolver(nameservers: Sequence[str] = (), timeout: float = 2.0) -> dns.asyncresolver.Resolver:
    """The system's resolver (``/etc/resolv.conf``), or one asking ``nameservers`` (``"10.0.0.10"``,
    ``"127.0.0.1:5353"``, ``"[fd00::53]:53"``). No cache: the TTL logic lives in the sources."""
    if not nameservers:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [_nameserver(ns) for ns in nameservers]
    resolver.lifetime = timeout
    return resolver


def _nameserver(text: str) -> dns.nameserver.Nameserver:
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    return dns.nameserver.Do53Nameserver(host, port)


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    urls: list[str]
    ttl: float | None  # the smallest TTL of the records used; None for a negative answer


class _Lookup:
    """Queries with dnspython's errors mapped: empty for "no such name/records", DiscoveryError
    for a failure."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def query(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        try:
            return await self.resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.Timeout as exc:
            raise DiscoveryError(name, f"DNS lookup of {name} ({rdtype}) timed out") from exc
        except dns.resolver.NoNameservers as exc:
            raise DiscoveryError(name, f"DNS lookup of {name} ({rdtype}): every server failed") from exc
        except dns.exception.DNSException as exc:
            raise DiscoveryError(name, f"DNS lookup of {name} ({rdtype}) failed: {exc}") from exc

    async def addresses(self, name: str) -> tuple[list[str], float | None]:
        """A and AAAA of ``name`` (sorted: rrsets are unordered, and every gateway should see
        the same order) and the smallest TTL among them."""
        answers = await asyncio.gather(self.query(name, "A"), self.query(name, "AAAA"))
        found: list[str] = []
        ttl: float | None = None
        for answer in answers:
            if answer is not None:
                found.extend(sorted(str(r.address) for r in _records(answer)))
                ttl = _min_ttl(ttl, answer.chaining_result.minimum_ttl)
        return found, ttl

    async def srv(self, name: str) -> list[Any] | None:
        answer = await self.query(name, "SRV")
        return None if answer is None else _sorted_srv(_records(answer))


def _records(answer: dns.resolver.Answer) -> list[Any]:
    # Any: dnspython types SRV/A records only as the Rdata base class.
    return list(answer)


def _sorted_srv(records: list[Any]) -> list[Any]:
    # Lowest priority value first, then heavier weight; the same order on every client.
    return sorted(records, key=lambda r: (r.priority, -r.weight, str(r.target), r.port))


def _min_ttl(current: float | None, ttl: float) -> float:
    return ttl if current is None else min(current, ttl)


class DnsSource:
    """Watches one DNS name for the instances of one service (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        type: RecordType = "A",
        port: int | None = None,
        resolver: dns.asyncresolver.Resolver | None = None,
        min_ttl: float = 1.0,
        max_ttl: float = 300.0,
    ) -> None:
        if type == "A" and port is None:
            raise ValueError("DNS address records need a port")
        self.name = name if name.endswith(".") else name + "."
        self.type = type
        self.port = port
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self._lookup = _Lookup(resolver if resolver is not None else make_resolver())
        self.description = f"dns {type} {self.name}"

    async def lookup(self) -> DnsAnswer:
        if self.type == "A":
            assert self.port is not None  # checked in __init__
            addresses, address_ttl = await self._lookup.addresses(self.name)
            return DnsAnswer([instance_url(a, self.port) for a in addresses], address_ttl)
        answer = await self._lookup.query(self.name, "SRV")
        if answer is None:
            return DnsAnswer([], None)
        ttl: float | None = answer.chaining_result.minimum_ttl
        extra = _additional_addresses(answer.response)
        urls: list[str] = []
        for record in _sorted_srv(_records(answer)):
            target = record.target.to_text()
            if target == ".":  # RFC 2782: "the service is decidedly not available at this domain"
                continue
            known = extra.get(target)
            target_ttl: float | None
            if known is not None:
                addresses, target_ttl = known
            else:
                addresses, target_ttl = await self._lookup.addresses(target)
            if target_ttl is not None:
                ttl = _min_ttl(ttl, target_ttl)
            for address in addresses:
                url = instance_url(address, record.port)
                if url not in urls:
                    urls.append(url)
        return DnsAnswer(urls, ttl)

    def next_delay(self, answer: DnsAnswer) -> float:
        ttl = self.min_ttl if answer.ttl is None else answer.ttl
        return min(max(ttl, self.min_ttl), self.max_ttl)

    async def watch(self) -> AsyncIterator[list[str]]:
        last: list[str] | None = None
        backoff = Backoff(self.description, self.min_ttl, self.max_ttl, _log)
        while True:
            try:
                answer = await self.lookup()
            except DiscoveryError as exc:
                await backoff.failed(exc)
                continue
            reraise_cancellation()  # dnspython waits with wait_for, which may swallow a cancel
            backoff.succeeded()
            if answer.urls != last:
                last = answer.urls
                yield list(last)
            await asyncio.sleep(self.next_delay(answer))


def _additional_addresses(response: dns.message.Message) -> dict[str, tuple[list[str], float]]:
    """Target name → (addresses, ttl) from the additional section of an SRV response."""
    out: dict[str, tuple[list[str], float]] = {}
    for rrset in response.additional:
        if rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            continue
        name = rrset.name.to_text()
        addresses, ttl = out.get(name, ([], float(rrset.ttl)))
        addresses = sorted([*addresses, *(str(r.address) for r in rrset)])
        out[name] = (addresses, min(ttl, float(rrset.ttl)))
    return out


class DnsDiscovery:
    """Resolves a service name: SRV first, then A/AAAA on ``port``. ``domain`` is appended to
    bare names (``orders`` → ``orders.shop.svc``). Used by the service kit's clients."""

    name = "dns"

    def __init__(
        self,
        *,
        scheme: str = "http",
        port: int = 80,
        srv_prefix: str = "_http._tcp.",
        domain: str | None = None,
        resolver: dns.asyncresolver.Resolver | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.scheme = scheme
        self.port = port
        self.srv_prefix = srv_prefix
        self.domain = domain
        resolver = resolver if resolver is not None else dns.asyncresolver.Resolver()
        resolver.lifetime = timeout
        self._lookup = _Lookup(resolver)

    def _fqdn(self, service: str) -> str:
        return f"{service}.{self.domain}" if self.domain and "." not in service else service

    async def resolve(self, service: str) -> list[str]:
        host = self._fqdn(service)
        srv = await self._lookup.srv(self.srv_prefix + host)
        if srv:
            return [instance_url(r.target.to_text(), r.port, self.scheme) for r in srv]
        addresses, _ = await self._lookup.addresses(host)
        return [instance_url(a, self.port, self.scheme) for a in addresses]
