"""Key paths: where a value sits in a config document, as pydantic reports it and as users read it."""

from __future__ import annotations

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """``("routes", 2, "proxy", "service")`` → ``routes[2].proxy.service``.

    Keys that would read ambiguously after a dot (containing ``.`` or spaces, or empty) are quoted
    in brackets: ``services['api.v1']``.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "." in part or " " in part or not part:
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out
