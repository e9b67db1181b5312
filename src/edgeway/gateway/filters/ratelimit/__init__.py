"""Rate limiting per route: the filter, the token buckets, and the Redis store shared by gateways."""
