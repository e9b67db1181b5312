"""Filters: what a route may do to a request before its action (CORS, auth, rate limits,
validation, the response cache, concurrency), each with its own config model."""
