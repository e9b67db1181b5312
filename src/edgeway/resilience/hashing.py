"""Stable hashing for sticky choices: a key (a user, a session) always lands on the same node.

*Rendezvous hashing* (highest random weight, Thaler & Ravishankar 1996): every node gets a score
for the key, and the node with the highest score wins. When a node leaves, only the keys it won
move (each to its own second-best node); every other key keeps its node. When a node joins, it
takes only the keys it now wins. No ring, no virtual nodes, nothing to rebuild: a pick scores
the nodes there are, which for a service's instances or a route's split is a handful.

Weighted (Schindelhauer & Schomaker 2005): the score ``w / -ln(u)``, with ``u`` the key's
uniform hash for the node in (0, 1), gives each node a share of the keys proportional to its
weight ``w``, exactly in expectation. Scores only compare, so only the weights' proportions
count: raising one node's weight (the others keeping their proportions, as the other side of a
two-way split always does) moves keys only *to* that node, lowering it moves keys only *away*
from it. A progressive rollout never sends a user back to the old side.

Hashes are 64-bit, computed with BLAKE2b (Python's own ``hash`` differs per process), so every
gateway process and every config generation makes the same choices for the same names.
"""

from __future__ import annotations

import hashlib
import math
from typing import Final

__all__ = ["mix", "score", "stable_hash"]

_MASK: Final = (1 << 64) - 1
_SCALE: Final = 1.0 / 18446744073709551616.0  # 2**-64


def stable_hash(data: bytes) -> int:
    """A 64-bit hash of ``data``, the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def mix(key: int, node: int) -> int:
    """A well-spread 64-bit value for one (key, node) pair: the SplitMix64 finaliser of their
    combination (both are already hashes; this decorrelates the nodes' scores for one key)."""
    z = (key ^ node) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def score(key: int, node: int, weight: float) -> float:
    """The weighted rendezvous score of ``node`` for ``key``: the highest score wins. A weight of
    0 (or less) scores -1, below any node that may win."""
    if weight <= 0:
        return -1.0
    u = (mix(key, node) + 0.5) * _SCALE  # in (0, 1), never 0 or 1
    return weight / -math.log(u)
