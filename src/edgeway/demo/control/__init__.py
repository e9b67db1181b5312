"""The control room of ``edgeway demo``: the running shop, live, on one page.

- :mod:`~edgeway.demo.control.server`: the page, its JSON API, the OTLP/HTTP receiver;
- :mod:`~edgeway.demo.control.collector`: traces, calls between nodes, rate/errors/latency;
- :mod:`~edgeway.demo.control.otlp` and :mod:`~edgeway.demo.control.spans`: spans and access-log
  lines as hops;
- :mod:`~edgeway.demo.control.health`: process health, breakers and instances per edge;
- :mod:`~edgeway.demo.control.patterns` and :mod:`~edgeway.demo.control.delay`: the patterns
  side by side at a client round-trip time, through a user-space delay proxy;
- :mod:`~edgeway.demo.control.wiring`: a control room for a demo's plan and supervisor.
"""
