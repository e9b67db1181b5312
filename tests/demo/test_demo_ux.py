"""What a new user meets first: the commands the demo prints run as printed, the banner fits an
80-column terminal, start-up progress shows without a terminal, the web app has its icon, the
demo's data stays out of git, and ``demo compare`` measures a rate-limited edge without failing."""

from __future__ import annotations

import asyncio
import io
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from conftest import held_ports
from edgeway.demo.cli import cli_command, demo_command, ready_banner
from edgeway.demo.plan import DEFAULT_PORTS, HttpReady, ProcessSpec, ShopPlan, parse_ports
from edgeway.demo.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]
BARE_PATH = "/usr/bin:/bin"  # a shell where no `edgeway` was installed


def _banner_text(plan: ShopPlan, cli: str, width: int = 80) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    for line in ready_banner(plan, 15, 12.3, cli):
        console.print(line, soft_wrap=True)
    return out.getvalue()


def _commands(text: str, cli: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith(cli + " demo")]


def test_the_commands_the_banner_prints_run_in_the_user_s_shell(tmp_path: Path) -> None:
    # No `edgeway` on the user's PATH (a checkout, .venv not activated): the banner must not
    # print `edgeway demo ...`, which the shell would answer with "command not found".
    cli = cli_command({"PATH": BARE_PATH})
    assert cli == f"{sys.executable} -m edgeway.cli"
    commands = _commands(_banner_text(ShopPlan(tmp_path), cli), cli)
    assert [c.split(" demo ")[1].split()[0] for c in commands] == ["flag", "flag", "compare"]
    for command in commands:
        result = subprocess.run(
            [*shlex.split(command), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": BARE_PATH, "COLUMNS": "120"},
        )
        assert result.returncode == 0, (command, result.stderr)


def test_dev_passes_what_was_typed_and_an_installed_edgeway_is_named_plainly(tmp_path: Path) -> None:
    assert cli_command({"EDGEWAY_CLI": "./dev", "PATH": BARE_PATH}) == "./dev"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "edgeway").write_text("#!/bin/sh\n")
    (bin_dir / "edgeway").chmod(0o755)
    assert cli_command({"PATH": f"{bin_dir}:{BARE_PATH}"}) == "edgeway"


def test_printed_commands_carry_the_options_that_reach_a_demo_on_other_ports(tmp_path: Path) -> None:
    plan = ShopPlan(tmp_path, parse_ports(["nats=15222", "gateway=9080"]), "gateway")
    assert demo_command(plan, "./dev", "flag", "payments.fail", "on") == (
        "./dev demo flag payments.fail on --nats-port 15222"
    )
    assert demo_command(plan, "./dev", "compare") == (
        "./dev demo compare --pattern gateway --port nats=15222 --port gateway=9080"
    )
    assert demo_command(ShopPlan(tmp_path), "./dev", "compare") == "./dev demo compare"


@pytest.mark.parametrize("cli", ["./dev", "edgeway"])
def test_the_banner_fits_80_columns_and_no_url_is_cut(tmp_path: Path, cli: str) -> None:
    plan = ShopPlan(tmp_path)
    text = _banner_text(plan, cli)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]
    assert "…" not in text
    for name in ("web-bff", "web", "mobile-bff", "gateway", "catalog-1", "legacy", "security"):
        assert plan.url(name) in text
    # the longest URL and the broker's, each alone on its line
    stripped = {line.strip() for line in lines}
    assert f"{plan.security_url}/.well-known/openid-configuration" in stripped
    assert plan.nats_url in stripped


def test_the_control_room_s_url_is_printed_first_with_the_others(tmp_path: Path) -> None:
    plan = ShopPlan(tmp_path)
    lines = [line.strip() for line in _banner_text(plan, "./dev").splitlines()]
    control = lines.index(f"{plan.url('control')}/")
    assert lines[control - 1].startswith("control room:")
    assert control < lines.index(f"{plan.url('web-bff')}/") < lines.index(f"{plan.url('catalog-1')}/docs")


def test_the_strangler_watch_command_is_one_shell_command_over_two_lines(tmp_path: Path) -> None:
    plan = ShopPlan(tmp_path)
    text = _banner_text(plan, "./dev")
    start = text.index("curl ")
    command = text[start : text.index("\n", text.index("\\\n", start) + 2)]
    # as the user's shell reads it when pasted: the backslash joins the lines
    words = subprocess.run(
        ["sh", "-c", f'set -- {command}\nprintf "%s\\n" "$@"'], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert words == [
        "curl",
        "--oauth2-bearer",
        plan.admin_token,
        f"{plan.url('web-bff-admin')}/strangler",
    ]


def test_a_long_command_is_wrapped_by_the_terminal_not_cut(tmp_path: Path) -> None:
    ports = [f"{name}={port + 20000}" for name, port in DEFAULT_PORTS.items()]
    plan = ShopPlan(tmp_path, parse_ports(ports))
    compare = demo_command(plan, "./dev", "compare")
    assert len(compare) > 80
    assert compare in {line.strip() for line in _banner_text(plan, "./dev").splitlines()}


async def test_start_up_progress_is_printed_plainly_when_output_is_not_a_terminal(tmp_path: Path) -> None:
    [port] = held_ports(1)  # the supervisor is told it for readiness: held with SO_REUSEPORT
    server = (
        "import http.server,sys\n"
        "http.server.HTTPServer.allow_reuse_port = True\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self): self.send_response(200); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
    spec = ProcessSpec("alpha", (sys.executable, "-c", server), {}, HttpReady(f"http://127.0.0.1:{port}/"))
    out = io.StringIO()
    supervisor = Supervisor([spec], console=Console(file=out, width=80, force_terminal=False))
    assert supervisor.plain
    stop = asyncio.Event()
    seen_before_ready: list[str] = []
    task = asyncio.create_task(supervisor.run(stop, lambda: seen_before_ready.append(out.getvalue())))
    try:
        async with asyncio.timeout(30):
            while not seen_before_ready:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0
    progress = seen_before_ready[0].splitlines()
    assert progress[0] == "edgeway demo: starting 1 processes"
    assert progress[1] == "alpha │ starting"
    assert progress[2].startswith("alpha │ ready in ")
    assert "\x1b[" not in seen_before_ready[0]  # no terminal control sequences in a file


async def test_the_web_app_serves_its_icon() -> None:
    import httpx

    from edgeway.demo.shop.web.server import create_app

    transport = httpx.ASGITransport(app=create_app({}))
    async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
        icon = await client.get("/favicon.ico")
        page = await client.get("/")
    assert icon.status_code == 200
    assert icon.headers["content-type"] in ("image/vnd.microsoft.icon", "image/x-icon")
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO header, 1 image
    assert '<link rel="icon" href="/favicon.ico"' in page.text


def test_the_demo_s_data_directory_is_ignored_by_git(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    data_dir = ROOT / ".edgeway-demo" / "security.db"  # the default --data-dir, from the checkout
    result = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", str(data_dir)], capture_output=True, timeout=30
    )
    assert result.returncode == 0
