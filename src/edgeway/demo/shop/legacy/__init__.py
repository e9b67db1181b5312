"""The legacy monolith: reviews and the old account pages, a plain FastAPI app (no service kit)
that the gateways reach through strangler routes while its features move to new services."""
