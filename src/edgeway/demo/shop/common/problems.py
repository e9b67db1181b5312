"""The shop's problem types: one namespace, so a caller can tell a business refusal by its type."""

from __future__ import annotations

__all__ = ["PROBLEMS"]

PROBLEMS = "https://shop.edgeway.example/problems/"
