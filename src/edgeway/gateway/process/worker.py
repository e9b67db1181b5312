"""One worker of a multi-worker gateway, started by :mod:`edgeway.gateway.process.supervisor`.

python -m edgeway.gateway.process.worker --parent-pid 1234 gateway.yaml
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeway.gateway.process.worker")
    parser.add_argument("--parent-pid", type=int, required=True, help="the supervisor (SIGHUP on reload)")
    parser.add_argument("config", type=Path)
    args = parser.parse_args(argv)
    from edgeway.gateway.process.parent_watch import die_with_parent

    if not die_with_parent(args.parent_pid):
        # The supervisor died while this worker was starting: nobody to serve for.
        print("edgeway gateway worker: the supervisor has exited; not starting", file=sys.stderr)
        return 1
    from edgeway.gateway.core.errors import ConfigError
    from edgeway.gateway.process.serve import serve_worker

    try:
        serve_worker(args.config, args.parent_pid)
    except (ConfigError, FileNotFoundError) as exc:
        # The supervisor's CLI validated the file; it changed since.
        print(f"edgeway gateway worker: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
