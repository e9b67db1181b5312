"""Traffic shifting on proxy routes: weighted splits between services, canary matches (header,
cookie, query), sticky choices by consistent hashing (a header, a cookie, the subject), and
mirroring (shadow copies). See docs/traffic.md.

The config models are :mod:`.config` (fields of ``proxy``); the action is :mod:`.action`; the
run-time API a controller uses is the gateway's :class:`~.state.Traffic` component
(``traffic_of(gateway.env)``) and each route's :class:`~.split.Split`. Nothing is imported here:
the proxy's config model imports :mod:`.config`, which must load without the runtime.
"""
