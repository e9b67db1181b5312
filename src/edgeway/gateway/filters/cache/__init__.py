"""The response cache: per-route TTL, an in-memory LRU (optionally backed by a shared Redis),
request coalescing. The filter is :mod:`.filter`, built for a route by :mod:`.build`; its config
is :mod:`.config`; see docs/cache.md.
"""
