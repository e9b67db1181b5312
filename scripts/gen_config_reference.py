"""Write docs/config-reference.md from the gateway config schema.

.venv/bin/python scripts/gen_config_reference.py
"""

from __future__ import annotations

from pathlib import Path

from edgeway.gateway.config.reference import render_reference

TARGET = Path(__file__).resolve().parent.parent / "docs" / "config-reference.md"

if __name__ == "__main__":
    TARGET.write_text(render_reference(), encoding="utf-8")
    print(f"wrote {TARGET}")
