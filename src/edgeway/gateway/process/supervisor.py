"""The parent of a multi-worker gateway: start the workers, forward signals, exit when they have.

It imports the standard library only (no gateway, no pydantic, no CLI), so the process that
merely supervises costs a bare interpreter's memory (about 10 MB) instead of a worker's. The CLI
validates the config, then replaces itself with this module (:func:`exec_supervisor`), keeping
its pid; each worker is a fresh ``python -m edgeway.gateway.process.worker`` that loads the config itself.

Signals: SIGTERM/SIGINT/SIGHUP are blocked before the workers start, so they inherit the mask: a
signal forwarded while one is still starting stays pending (instead of killing it, or being lost)
until its event loop handles signals and unblocks them (``serve.run``). This process takes its own
with sigtimedwait; a worker's own SIGHUP (its admin API reloaded it) goes to the other workers
only (the sender is known from siginfo, so it does not reload twice).

    python -m edgeway.gateway.process.supervisor --workers 2 gateway.yaml
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
METRICS_DIR_ENV = "EDGEWAY_METRICS_DIR"  # edgeway.gateway.telemetry.workers.DIR_ENV
CAN_WAIT = hasattr(signal, "sigtimedwait")  # Linux; not macOS


def _python() -> list[str]:
    """This interpreter with the flags it was started with (-X, -W, -O...), for a child."""
    # The private helper is what multiprocessing uses for the same purpose.
    return [sys.executable, *subprocess._args_from_interpreter_flags()]  # type: ignore[attr-defined]


def exec_supervisor(config: Path, workers: int, *, token_file: Path | None = None) -> None:
    """Replace this process with the supervisor of ``workers`` workers serving ``config``;
    ``token_file``: an admin token generated for the workers, removed when they have exited."""
    argv = [*_python(), "-m", "edgeway.gateway.process.supervisor", "--workers", str(workers)]
    if token_file is not None:
        argv += ["--token-file", str(token_file)]
    argv.append(str(config))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def start_workers(config: Path, workers: int) -> list[subprocess.Popen[bytes]]:
    parent = str(os.getpid())
    return [
        subprocess.Popen(
            [*_python(), "-m", "edgeway.gateway.process.worker", "--parent-pid", parent, str(config)]
        )
        for _ in range(workers)
    ]


def supervise(procs: Sequence[subprocess.Popen[bytes]]) -> int:
    """Forward signals to the workers until they have all exited; the first failure's status."""
    if not CAN_WAIT:  # macOS: no siginfo, forward to every worker

        def forward(signum: int, _frame: object) -> None:
            _send(procs, signum, exclude=None)

        for sig in FORWARDED:
            signal.signal(sig, forward)
    else:
        while any(p.poll() is None for p in procs):
            info = signal.sigtimedwait(FORWARDED, 0.5)
            if info is not None:
                exclude = info.si_pid if info.si_signo == signal.SIGHUP else None
                _send(procs, info.si_signo, exclude=exclude)
    code = 0
    for p in procs:
        status = p.wait()
        # A worker killed by a signal reports -signum; a shell reports 128 + signum.
        code = code or (128 - status if status < 0 else status)
    return code


def _send(procs: Sequence[subprocess.Popen[bytes]], signum: int, exclude: int | None) -> None:
    for p in procs:
        if p.pid != exclude and p.poll() is None:
            os.kill(p.pid, signum)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m edgeway.gateway.process.supervisor")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--token-file", type=Path, default=None)
    parser.add_argument("config", type=Path)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if CAN_WAIT:
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    # Where each worker serves its metrics to the others, so that a scrape of any worker answers
    # the sum (edgeway.gateway.telemetry.workers, DIR_ENV); removed when the workers have exited.
    metrics_dir = tempfile.mkdtemp(prefix="edgeway-metrics-")
    os.environ[METRICS_DIR_ENV] = metrics_dir
    try:
        code = supervise(start_workers(args.config, args.workers))
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if args.token_file is not None:
        _remove_token(args.token_file, os.environ.get("EDGEWAY_ADMIN_TOKEN", ""))
    return code


def _remove_token(path: Path, token: str) -> None:
    """The generated admin token's file, unless another gateway has taken the port since (the
    same rule as ``admin_auth.remove_token``, which this stdlib-only module cannot import)."""
    try:
        if token and path.read_text(encoding="utf-8").strip() == token:
            path.unlink()
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
