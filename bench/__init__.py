"""Benchmark harness for edgeway: the gateway side by side with nginx and aiohttp.

Each benchmark is a module with ``run(json: bool, ...) -> dict``: it starts its processes, drives
them with wrk in one run, prints a rich table (or, with ``json=True``, one JSON object on stdout),
and returns the same data. Progress goes to stderr so ``--json`` output stays machine-readable.
A result with ``"failed": true`` means a leg that should have run did not; ``./dev bench``
exits non-zero for it. A leg that cannot run on this machine (nginx not installed, the gateway
feature not built yet) is *skipped* with a reason instead.

The pieces are reusable: :mod:`bench.harness` (processes, ports, RSS, machine description),
:mod:`bench.wrk` (load generation and parsing), :mod:`bench.legs` (legs run in sequence with
medians over repetitions), :mod:`bench.backend` (a fast upstream with per-request delay),
:mod:`bench.aiohttp_proxy` and :mod:`bench.aiohttp_compose` (the aiohttp baselines),
:mod:`bench.nginx` (nginx as a reverse proxy), :mod:`bench.gateway` (``edgeway gateway`` as a
target), :mod:`bench.idle` (holding idle keep-alive connections), :mod:`bench.report` (table,
targets and JSON output). The benchmarks themselves: :mod:`bench.proxy`, :mod:`bench.aggregate`,
:mod:`bench.auth`, :mod:`bench.bus`, :mod:`bench.push_fanout`, :mod:`bench.faults`, :mod:`bench.shop`
(the reference shop's screens through every edge).
"""
