"""Downstream HTTP/2 (RFC 9113) on the engine: h2c with prior knowledge and ALPN ``h2`` over TLS,
each stream served as an :class:`~edgeway.http.exchange.Exchange` by the listener's handler."""
