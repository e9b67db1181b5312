"""``${VAR}`` and ``${VAR:-default}`` in config strings.

``$${`` is a literal ``${``. A ``$`` not followed by ``{`` is left alone, so prices and regexes
need no escaping. The default is used when the variable is unset *or empty*, as in POSIX shells;
it cannot itself contain ``}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class InterpolationProblem:
    """Why one string could not be interpolated (the caller knows where the string is)."""

    message: str


def needs_interpolation(text: str) -> bool:
    return "${" in text


def interpolate(text: str, env: Mapping[str, str]) -> tuple[str, list[InterpolationProblem]]:
    """Return the text with references replaced, and every problem found in it.

    All problems are collected so a file with three unset variables reports three issues.
    """
    problems: list[InterpolationProblem] = []

    def replace(found: re.Match[str]) -> str:
        whole = found.group(0)
        if whole == "$${":
            return "${"
        body = found.group(1)
        if body is None:
            problems.append(
                InterpolationProblem("unterminated '${': close it with '}' or write '$${' for a literal")
            )
            return whole
        name, has_default, default = body.partition(":-")
        if _NAME.fullmatch(name) is None:
            problems.append(
                InterpolationProblem(
                    f"'${{{body}}}' is not a variable reference; use ${{NAME}} or ${{NAME:-default}} "
                    "(write '$${' for a literal '${')"
                )
            )
            return whole
        value = env.get(name)
        if value:
            return value
        if has_default:
            return default
        if value is None:
            problems.append(
                InterpolationProblem(
                    f"environment variable '{name}' is not set (write ${{{name}:-default}} to give a default)"
                )
            )
            return whole
        return value

    return _REFERENCE.sub(replace, text), problems
