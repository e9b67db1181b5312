"""CPU and wall time of edgeway's start-up imports, two source trees interleaved.

    python scripts/startup_cpu.py BEFORE_SRC AFTER_SRC [--runs 5] [CASE ...]

Each case is a fresh ``python -c …`` with ``PYTHONPATH`` set to one tree, run ``--runs`` times
per tree, alternating the trees so that other work on a shared machine weighs on both alike;
one unmeasured run per tree first compiles the ``.pyc`` files. The best run is kept: CPU is the
child's user + system time (``getrusage(RUSAGE_CHILDREN)``), which load disturbs less than wall
time. Prints a Markdown table (docs/benchmarks.md, "Start-up imports"). To measure the code of
a commit: ``git archive COMMIT src | tar -x -C /tmp/before``, then pass ``/tmp/before/src``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DEMO_GATEWAY = Path(__file__).resolve().parents[1] / "src/edgeway/demo/shop/edges/gateway.yaml"


def _cli(*args: str) -> str:
    return f"import sys; sys.argv = ['edgeway', *{list(args)!r}]; from edgeway.cli import main; main()"


CASES: dict[str, str] = {
    "orders": "import edgeway.demo.shop.orders.app",
    "catalog": "import edgeway.demo.shop.catalog.app",
    "inventory": "import edgeway.demo.shop.inventory.app",
    "payments": "import edgeway.demo.shop.payments.app",
    "notifications": "import edgeway.demo.shop.notifications.app",
    "security": "import edgeway.security_service",
    "gateway": "import edgeway.cli, edgeway.gateway.process.cli, edgeway.gateway.process.serve",
    "gateway-demo": (
        "from pathlib import Path; from edgeway.gateway.config import load_config; "
        "from edgeway.gateway.core.runtime import Gateway; "
        f"Gateway(load_config(Path({str(DEMO_GATEWAY)!r})), None)"
    ),
    "gateway-help": _cli("gateway", "--help"),
    "help": _cli("--help"),
    "python": "pass",
}


def run(code: str, src: str) -> tuple[float, float]:
    """Wall and CPU seconds of one ``python -c code`` importing edgeway from ``src``."""
    env = {**os.environ, "PYTHONPATH": src, "COLUMNS": "100"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("cases", nargs="*", help=f"some of {', '.join(CASES)} (default: all)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_intermixed_args()
    unknown = [name for name in args.cases if name not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; the cases are {', '.join(CASES)}")
    trees = {"before": args.before, "after": args.after}
    print(f"load average {os.getloadavg()[0]:.1f}")
    print("| case | CPU before (s) | CPU after (s) | change | wall before (s) | wall after (s) |")
    print("|---|---|---|---|---|---|")
    for name in args.cases or CASES:
        code = CASES[name]
        for src in trees.values():
            run(code, src)
        best = {tree: (float("inf"), float("inf")) for tree in trees}
        for _ in range(args.runs):
            for tree, src in trees.items():
                wall, cpu = run(code, src)
                best[tree] = (min(best[tree][0], wall), min(best[tree][1], cpu))
        (wall_b, cpu_b), (wall_a, cpu_a) = best["before"], best["after"]
        change = 100 * (cpu_a - cpu_b) / cpu_b
        print(
            f"| {name} | {cpu_b:.2f} | {cpu_a:.2f} | {change:+.0f} % | {wall_b:.2f} | {wall_a:.2f} |",
            flush=True,
        )
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
