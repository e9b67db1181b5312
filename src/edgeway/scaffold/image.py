"""A scaffolded service's image recipe: edgeway's own template (``edgeway/deploy/templates/
service.Dockerfile``, linted and checked in edgeway's tests), with its defaults set for the service:
the module it runs, the port it listens on and checks, the tag the build command shows.

The template is used as written, not copied into the scaffold's templates, so there is one recipe
to keep honest; each default is replaced exactly once, and a template that no longer has one of
them stops ``edgeway new`` instead of producing a recipe that runs the wrong thing.
"""

from __future__ import annotations

import re

from edgeway.deploy import TEMPLATES
from edgeway.scaffold.errors import ScaffoldError

__all__ = ["service_image_files"]


def service_image_files(package: str, port: int, image: str) -> dict[str, str]:
    """``Dockerfile`` and ``.dockerignore`` of a service's folder (file name → text)."""
    recipe = (TEMPLATES / "service.Dockerfile").read_text(encoding="utf-8")
    for pattern, value in (
        (r"^ARG SERVICE_MODULE=\S+$", f"ARG SERVICE_MODULE={package}"),
        (r"(?<=EDGEWAY_PORT=)\d+", str(port)),
        (r"^EXPOSE \d+$", f"EXPOSE {port}"),
        (r"(?<=EDGEWAY_HEALTH_URL=http://127\.0\.0\.1:)\d+(?=/)", str(port)),
        (r"(?<=^#   docker build -t )\S+(?= \.$)", image),
    ):
        recipe, found = re.subn(pattern, value.replace("\\", "\\\\"), recipe, flags=re.MULTILINE)
        if found != 1:
            raise ScaffoldError(
                f"{TEMPLATES / 'service.Dockerfile'}: expected one match of {pattern!r}, found {found}: "
                "the image template changed without edgeway new (a bug in edgeway; please report it)"
            )
    ignore = (TEMPLATES / "service.dockerignore").read_text(encoding="utf-8")
    return {"Dockerfile": recipe, ".dockerignore": ignore}
