"""Why ``edgeway new`` stops: each error says what is wrong and what to do instead; nothing was
written when one is raised."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ScaffoldConflictError", "ScaffoldError"]


class ScaffoldError(Exception):
    """Scaffolding cannot go ahead; the message says why and what to do instead."""


class ScaffoldConflictError(ScaffoldError):
    """Files the template would write exist already; nothing was written."""

    def __init__(self, root: Path, existing: list[Path]) -> None:
        shown = ", ".join(str(p) for p in existing[:5]) + (" ..." if len(existing) > 5 else "")
        super().__init__(
            f"{len(existing)} file(s) would be overwritten in {root}: {shown}; "
            "nothing was written (remove them or choose another name)"
        )
        self.existing = existing
