from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import harness
from bench.errors import ProcessFailed, ToolMissing


def test_rss_of_this_process_is_read_from_proc() -> None:
    assert harness.rss_bytes(os.getpid()) > 1024 * 1024


def test_tree_rss_includes_children(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(60 << 20); time.sleep(30)"])
    try:
        for _ in range(100):
            if harness.rss_bytes(child.pid) > 50 << 20:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert child.pid in harness.descendants(os.getpid())
        assert harness.tree_rss_bytes(os.getpid()) >= harness.rss_bytes(os.getpid()) + (50 << 20)
    finally:
        child.kill()
        child.wait()


def test_a_process_that_dies_before_listening_fails_with_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('boom: bad flag\\n'); sys.exit(3)"]
    process = harness.ManagedProcess("broken", argv, port=0, log_dir=tmp_path)
    with pytest.raises(ProcessFailed, match="exited with status 3") as info:
        process.start()
    assert "boom: bad flag" in str(info.value)
    assert not process.alive()


def test_a_process_that_never_listens_is_stopped_after_the_timeout(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(30)"]
    process = harness.ManagedProcess("silent", argv, port=0, log_dir=tmp_path)
    with pytest.raises(ProcessFailed, match="did not open"):
        process.start(timeout=0.5)
    assert not process.alive()


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    # A parent that forks a child ignoring nothing, then serves; stopping must take both.
    code = (
        "import socket, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "sys.stderr.write(f'listening on 127.0.0.1:{s.getsockname()[1]}\\n'); sys.stderr.flush()\n"
        "time.sleep(60)\n"
    )
    process = harness.ManagedProcess("parent", [sys.executable, "-c", code], port=0, log_dir=tmp_path).start()
    for _ in range(100):
        children = harness.descendants(process.pid)
        if children:
            break
        subprocess.run(["sleep", "0.05"], check=True)
    assert children
    process.stop()
    for pid in children:
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists() or "Z" in _state(pid):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid)


def _state(pid: int) -> str:
    try:
        return next(
            line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:")
        )
    except OSError:
        return "Z"


def test_require_tool_names_the_package_to_install() -> None:
    with pytest.raises(ToolMissing, match="apt-get install no-such-tool-xyz"):
        harness.require_tool("no-such-tool-xyz")


def test_machine_describes_cpu_kernel_python_and_tools() -> None:
    m = harness.machine()
    assert m["cores"] == os.cpu_count()
    assert m["python"].count(".") == 2
    assert m["kernel"]
    assert m["cpu"]
    assert {"nginx", "wrk", "packages", "loadavg_1m"} <= set(m)


def test_median_of_repetitions() -> None:
    assert harness.median([3.0, 1.0, 2.0]) == 2.0
    assert harness.median([1.0, 2.0, 3.0, 10.0]) == 2.5


def test_python_children_can_import_bench_from_anywhere(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import bench.harness"],
        env=harness.python_env(),
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
