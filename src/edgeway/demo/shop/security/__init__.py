"""The shop's security service: edgeway's security service with the shop's seed (``seed.yaml``),
publishing user change events for the profile service's local copy."""

from __future__ import annotations

from pathlib import Path

SEED_FILE = Path(__file__).with_name("seed.yaml")

__all__ = ["SEED_FILE"]
