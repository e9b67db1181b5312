"""Authentication and authorization at the edge: the ``auth`` filter, token verification, the
identity headers services receive, and revocations pushed over the bus."""
