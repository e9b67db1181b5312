"""What a scaffolded service or edge may be called, and the names derived from it.

One name is used as a Python package, a bus channel, a gateway service and route id, an
environment variable prefix and (deployed) a Kubernetes object and DNS label, so it must be valid
as all of them: lowercase letters, digits and single hyphens, starting with a letter, at most 40
characters (room for the ``-headless``, ``-pdb`` suffixes a DNS label of 63 must still hold).
"""

from __future__ import annotations

import keyword
import re
import sys
from dataclasses import dataclass

__all__ = ["MAX_LENGTH", "Names", "ScaffoldNameError", "check_name", "is_valid_name"]

MAX_LENGTH = 40
_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")

# Packages a generated package would shadow (it is first on sys.path in its own tests).
_TAKEN = frozenset({"edgeway", "tests", "test", "conftest", "fastapi", "pydantic", "sqlalchemy", "httpx"})


class ScaffoldNameError(ValueError):
    """A name that cannot be used for a service or an edge; the message says why and what would do."""


@dataclass(frozen=True)
class Names:
    """``name`` as given (``order-history``) and the forms the templates use."""

    name: str
    package: str  # order_history: the Python package
    class_name: str  # OrderHistory: the Service subclass, the settings class
    env: str  # ORDER_HISTORY: the prefix of the environment variables of its edge entries

    def as_data(self) -> dict[str, str]:
        return {"name": self.name, "package": self.package, "class_name": self.class_name, "env": self.env}


def check_name(kind: str, name: str) -> Names:
    """The names for a ``kind`` ("service", "gateway") called ``name``, or :class:`ScaffoldNameError`."""
    if not name:
        raise ScaffoldNameError(f"the {kind} needs a name, for example 'orders'")
    if len(name) > MAX_LENGTH:
        raise ScaffoldNameError(f"{kind} name {name!r} is {len(name)} characters long; at most {MAX_LENGTH}")
    if _NAME.fullmatch(name) is None:
        hint = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", name.lower())).strip("-")
        suggestion = f" (for example {hint!r})" if hint and _NAME.fullmatch(hint) else ""
        raise ScaffoldNameError(
            f"{kind} name {name!r} is not valid: use lowercase letters, digits and single hyphens, "
            f"starting with a letter{suggestion}"
        )
    package = name.replace("-", "_")
    if keyword.iskeyword(package) or package in sys.stdlib_module_names or package in _TAKEN:
        raise ScaffoldNameError(
            f"{kind} name {name!r} would make a Python package {package!r} that hides a module of "
            f"the same name; choose another, for example '{name}-service'"
        )
    return Names(
        name=name,
        package=package,
        class_name="".join(part.capitalize() for part in name.split("-")),
        env=package.upper(),
    )


def is_valid_name(name: str) -> bool:
    try:
        check_name("service", name)
    except ScaffoldNameError:
        return False
    return True
