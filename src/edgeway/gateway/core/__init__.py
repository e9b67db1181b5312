"""The gateway's core: the router, the per-route pipeline (filters in front of one action), the
running form of a config, request paths, errors and the access log."""
