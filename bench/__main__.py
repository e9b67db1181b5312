"""``python -m bench …`` from a source checkout; ``./dev bench …`` runs it on the compiled build."""

from __future__ import annotations

import os

from bench.cli import app

# Usage lines name the command as it was typed: ./dev exports EDGEWAY_CLI (its own name).
app(prog_name=f"{os.environ['EDGEWAY_CLI']} bench" if os.environ.get("EDGEWAY_CLI") else "python -m bench")
