"""The response cache filter: per-route TTL, an in-memory LRU (optionally backed by a shared
Redis), request coalescing.

For a GET (or HEAD) on a route with ``cache``:

1. the key is built (:mod:`.keys`) and looked up; a fresh entry is answered at once with ``Age``
   and ``X-Cache: HIT``, without calling the action;
2. on a miss, if another request for the same key is already upstream, this one waits for that
   response (up to ``coalesce_timeout``) and answers from it; if that response could not be
   stored (not cacheable, private, failed) the waiter goes upstream itself: a leader's failure
   never becomes its waiters' answer;
3. otherwise the action runs with a :class:`~.capture.Capture` tapping what it writes (the client
   gets it streamed as usual, with ``X-Cache: MISS``); a complete response that the store policy
   (:mod:`.policy`) accepts is stored — unless the cache was purged while it was on its way.

A hit for a client that already holds the response (``If-None-Match`` matching the stored
``ETag``, or ``If-Modified-Since`` not older than its ``Last-Modified``) is answered 304.
HEAD misses go upstream and are not stored (they have no body to store). Requests with ``Range``
are passed through (edgeway stores whole responses only). Other methods are not touched.
Request ``Cache-Control`` is ignored unless the rule says ``client_directives: honor``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import ADMIT, RequestContext, Verdict
from edgeway.gateway.filters.cache.capture import Capture
from edgeway.gateway.filters.cache.config import CacheRule
from edgeway.gateway.filters.cache.directives import CacheControl, parse_cache_control
from edgeway.gateway.filters.cache.keys import KeySpec
from edgeway.gateway.filters.cache.policy import StorePolicy, http_date
from edgeway.gateway.filters.cache.shared import ResponseCache
from edgeway.gateway.filters.cache.store import Entry
from edgeway.http.exchange import Headers

_GET = b"GET"
_HEAD = b"HEAD"
_HIT = b"HIT"
_MISS = b"MISS"


class CacheFilter:
    def __init__(self, route_id: str, rule: CacheRule, cache: ResponseCache) -> None:
        self.cache = cache
        vary = tuple(name.lower().encode() for name in rule.vary)
        self.keys = KeySpec(
            route_id.encode(), vary, frozenset(q.encode() for q in rule.ignore_query), rule.shared
        )
        self.policy = StorePolicy(
            route_id, frozenset(rule.statuses), float(rule.ttl), rule.max_ttl, frozenset(vary)
        )
        self.honor_client = rule.client_directives == "honor"
        self.coalesce = rule.coalesce
        self.coalesce_timeout = float(rule.coalesce_timeout)
        self.max_entry = int(rule.max_entry_bytes)
        requests = cache.requests
        self.hits = requests.labels(route_id, "hit")
        self.misses = requests.labels(route_id, "miss")
        self.coalesced = requests.labels(route_id, "coalesced")
        self.bypassed = requests.labels(route_id, "bypass")
        self.stored = cache.stored.labels(route_id)
        self.route_id = route_id

    def on_request(self, ctx: RequestContext) -> Verdict:
        ex = ctx.ex
        method = ex.method
        if method != _GET and method != _HEAD:
            return ADMIT
        request_cc = self._client_directives(ctx)
        if ex.header(b"range") is not None:
            self.bypassed.inc()
            return ADMIT
        return self._handle(ctx, request_cc)

    async def _handle(self, ctx: RequestContext, request_cc: CacheControl | None) -> None:
        ex = ctx.ex
        key = self.keys.key(ctx)
        now = time.time()
        refresh = request_cc is not None and (request_cc.no_cache or request_cc.max_age == 0)
        if refresh:
            self.bypassed.inc()
        else:
            entry = await self.cache.lookup(key, now)
            if entry is not None and _acceptable(entry, request_cc, now):
                self.hits.inc()
                _answer(ctx, entry, now)
                return
            if request_cc is not None and request_cc.only_if_cached:
                raise Rejection(504, "Gateway Timeout", "only-if-cached: no stored response for this request")
            if ex.method == _HEAD:
                self.misses.inc()
                ex.add_response_header(b"x-cache", _MISS)
                return
            if self.coalesce:
                flight = self.cache.inflight.get(key)
                if flight is not None:
                    await self._follow(ctx, flight)
                    return
            self.misses.inc()
        self._lead(ctx, key, request_cc)

    def _client_directives(self, ctx: RequestContext) -> CacheControl | None:
        if not self.honor_client:
            return None
        lines = [v for n, v in ctx.ex.headers if n.lower() == b"cache-control"]
        return parse_cache_control(lines) if lines else None

    async def _follow(self, ctx: RequestContext, flight: asyncio.Future[Entry | None]) -> None:
        """Wait for the leader's response; answer from it, or go upstream if there is none."""
        done, _ = await asyncio.wait((flight,), timeout=self.coalesce_timeout)
        entry = flight.result() if done else None
        if entry is not None:
            self.coalesced.inc()
            _answer(ctx, entry, time.time())
            return
        self.misses.inc()
        ctx.ex.add_response_header(b"x-cache", _MISS)

    def _lead(self, ctx: RequestContext, key: bytes, request_cc: CacheControl | None) -> None:
        """Go upstream with a tap on the response; once it is over, store what may be stored."""
        ex = ctx.ex
        flight: asyncio.Future[Entry | None] | None = None
        if self.coalesce and key not in self.cache.inflight:
            flight = self.cache.inflight[key] = asyncio.get_running_loop().create_future()
        capture = Capture(self.max_entry)
        ex.add_response_header(b"x-cache", _MISS)
        ex.tap = capture
        epoch = self.cache.epoch

        def store(failure: BaseException | None) -> Awaitable[None] | None:
            ex.tap = None
            now = time.time()
            entry: Entry | None = None
            try:
                if request_cc is not None and request_cc.no_store:
                    self._not_stored("client-no-store")
                elif self.cache.epoch != epoch:
                    self._not_stored("purged")
                elif not capture.usable:
                    self._not_stored("too-large" if capture.overflow else "incomplete")
                else:
                    unverified = ctx.identity is None and ex.header(b"authorization") is not None
                    decided = self.policy.decide(
                        capture.status,
                        capture.headers,
                        capture.body_bytes(),
                        now,
                        unverified_authorization=unverified,
                    )
                    if isinstance(decided, str):
                        self._not_stored(decided)
                    else:
                        entry = decided
                        self.cache.memory_put(key, entry)
            finally:
                if flight is not None:
                    del self.cache.inflight[key]
                    flight.set_result(entry)
            if entry is None or failure is not None:
                return None
            self.stored.inc()
            return self.cache.store_shared(key, entry, now)

        ctx.defer(store)

    def _not_stored(self, reason: str) -> None:
        self.cache.not_stored.labels(self.route_id, reason).inc()


def _acceptable(entry: Entry, request_cc: CacheControl | None, now: float) -> bool:
    if request_cc is None:
        return True
    if request_cc.max_age is not None and entry.age(now) > request_cc.max_age:
        return False
    return request_cc.min_fresh is None or entry.expires_at - now >= request_cc.min_fresh


def _answer(ctx: RequestContext, entry: Entry, now: float) -> None:
    ex = ctx.ex
    own = [
        (b"age", b"%d" % entry.age(now)),
        (b"x-cache", _HIT),
        (b"x-request-id", ex.request_id),
        (b"traceparent", ctx.traceparent),
    ]
    if entry.status == 200 and _not_modified(ex.headers, entry.headers):
        # The client holds this representation already (RFC 9110 §13.1): 304 with the fields a
        # 200 would have carried for caches (§15.4.5), no body.
        kept = [(n, v) for n, v in entry.headers if n.lower() in _NOT_MODIFIED_FIELDS]
        ex.respond(304, [*kept, *own])
        return
    ex.respond(entry.status, [*entry.headers, *own], entry.body)


_NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"}
)


def _not_modified(request: Headers, stored: Headers) -> bool:
    """If-None-Match (weak comparison), else If-Modified-Since, against the stored response."""
    if_none_match = [v for n, v in request if n.lower() == b"if-none-match"]
    if if_none_match:
        etag = next((v.strip() for n, v in stored if n.lower() == b"etag"), None)
        if etag is None:
            return False
        wanted = {t.strip().removeprefix(b"W/") for line in if_none_match for t in line.split(b",")}
        return b"*" in wanted or etag.removeprefix(b"W/") in wanted
    since = next((v for n, v in request if n.lower() == b"if-modified-since"), None)
    modified = next((v for n, v in stored if n.lower() == b"last-modified"), None)
    if since is None or modified is None:
        return False
    since_at, modified_at = http_date(since), http_date(modified)
    return since_at is not None and modified_at is not None and modified_at <= since_at
