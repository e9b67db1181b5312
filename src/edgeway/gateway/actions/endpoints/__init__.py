"""Python endpoints: async functions registered with ``@endpoint`` in modules the config names
(``python: {modules: [...]}``), served by routes with ``endpoint: {name: ...}`` on the gateway's
own engine (no second server).

The function gets a :class:`Request` (method, path parameters, query, headers, JSON body,
identity, ``services`` clients, the route's ``options``) and returns a JSON value (200), None
(204) or a :class:`Response`. A :class:`~edgeway.gateway.core.errors.Rejection` it raises is answered
as its problem; a service call that failed and was not caught is answered like a failed required
aggregate call; any other exception is a 500 problem, logged with its traceback on the request's
access-log line and through :mod:`logging`.
"""
