"""Print a benchmark's result: a rich table for people, one JSON object for machines."""

from __future__ import annotations

import json
import operator
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.legs import Outcome, Settings, Status

_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Target:
    """A goal from the issue, checked against a measured value (None: not measured)."""

    name: str
    value: float | None
    op: str
    limit: float

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return _OPS[self.op](self.value, self.limit)

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "op": self.op, "limit": self.limit, "met": self.met}


def targets_dict(targets: Sequence[Target]) -> dict[str, Any]:
    return {t.name: t.as_dict() for t in targets}


def show(value: float | None, unit: str = "") -> str:
    return "not measured" if value is None else f"{value:g}{unit}"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def legs_table(title: str, outcomes: Mapping[str, Outcome], settings: Settings) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("leg", no_wrap=True)
    for column in ("conns", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "RSS MB", "idle RSS MB"):
        table.add_column(column, justify="right", no_wrap=True)
    for outcome in outcomes.values():
        if outcome.status is not Status.OK:
            colour = "yellow" if outcome.status is Status.SKIPPED else "red"
            table.add_row(outcome.leg.label, "", f"[{colour}]{outcome.status.value}[/{colour}]")
            continue
        for i, c in enumerate(settings.connections):
            runs = outcome.samples.get(c, [])
            table.add_row(
                outcome.leg.label if i == 0 else "",
                str(c),
                _fmt(outcome.rps(c), 0),
                _fmt(outcome.median(c, "p50_ms")),
                _fmt(outcome.median(c, "p90_ms")),
                _fmt(outcome.median(c, "p99_ms")),
                str(sum(r.errors.total for r in runs)),
                _fmt(outcome.rss_mb, 1) if i == 0 else "",
                _fmt(outcome.idle.rss_held_mb, 1) if i == 0 and outcome.idle is not None else "",
            )
    return table


def print_targets(console: Console, targets: Sequence[Target]) -> None:
    for t in targets:
        mark = {
            True: "[green]met[/green]",
            False: "[red]missed[/red]",
            None: "[yellow]not measured[/yellow]",
        }[t.met]
        console.print(f"  target {t.name} {t.op} {t.limit:g}: {_fmt(t.value, 3)} {mark}")


def emit(
    result: Mapping[str, Any],
    *,
    as_json: bool,
    title: str,
    outcomes: Mapping[str, Outcome],
    settings: Settings,
    summary: Sequence[tuple[str, str]],
    targets: Sequence[Target],
) -> None:
    if as_json:
        # Plain print: rich would wrap long lines and break the JSON.
        print(json.dumps(result, indent=None, sort_keys=False))
        return
    # Piped output would be cut to 80 columns; a results table is worth the width.
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    console.print(legs_table(title, outcomes, settings))
    for outcome in outcomes.values():
        if outcome.status is not Status.OK:
            console.print(f"  {outcome.leg.label} {outcome.status.value}: {outcome.reason}", markup=False)
    for label, value in summary:
        console.print(f"  {label}: [bold]{value}[/bold]")
    print_targets(console, targets)
    m = result.get("details", {}).get("machine", {})
    if m:
        console.print(
            f"[dim]machine: {m.get('cpu')}, {m.get('cores')} cores, Linux {m.get('kernel')}, "
            f"Python {m.get('python')}, {m.get('nginx') or 'no nginx'}, {m.get('wrk') or 'no wrk'}, "
            f"load {m.get('loadavg_1m')}[/dim]"
        )


def emit_scenarios(
    result: Mapping[str, Any],
    checked: Sequence[Target],
    *,
    as_json: bool,
    title: str,
    scenarios: Sequence[str],
    hidden: Collection[str] = (),
) -> None:
    """A scenario benchmark's result (bench faults, bench traffic): the JSON object, or a table of
    each scenario's figures (``hidden`` keys left out), its targets and the machine."""
    if as_json:
        print(json.dumps(result))
        return
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    table = Table(title=title, title_justify="left")
    for column in ("scenario", "figure", "value"):
        table.add_column(column)
    for scenario in scenarios:
        figures = [(k, v) for k, v in result.get(scenario, {}).items() if k not in hidden]
        for i, (key, value) in enumerate(figures):
            table.add_row(scenario if i == 0 else "", key, str(value))
    console.print(table)
    print_targets(console, checked)
    m = result["details"]["machine"]
    console.print(f"[dim]machine: {m.get('cpu')}, {m.get('cores')} cores, load {m.get('loadavg_1m')}[/dim]")
