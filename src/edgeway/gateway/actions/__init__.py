"""Actions: what a route does with an admitted request (proxy it, aggregate service calls, run a
Python endpoint, push to the client)."""
