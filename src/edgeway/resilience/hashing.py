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

Names are hashed with CRC-32 (Python's own ``hash`` differs per process), so every gateway
process and every config generation makes the same choices for the same names; CRC-32 is
linear, the mixing of each (key, node) pair below is not, and the shares and second choices it
gives are uniform (tests/resilience/test_balancer.py). It is not a keyed hash: a client that
sends the key can pick its instance by trying values, as it could with any hash of N choices.
Values are 31-bit, so the mixing stays within the machine integers of the compiled build (a
product of two 31-bit numbers fits in 62 bits); 2^31 levels are far finer than any share of
keys a weight can ask for.
"""

from __future__ import annotations

import math
import zlib
from typing import Final

__all__ = ["mix", "score", "stable_hash"]

_MASK: Final = (1 << 31) - 1
_SCALE: Final = 1.0 / 2147483648.0  # 2**-31


def stable_hash(data: bytes) -> int:
    """A 31-bit hash of ``data``, the same in every process and on every machine."""
    return zlib.crc32(data) & _MASK


def mix(key: int, node: int) -> int:
    """A well-spread 31-bit value for one (key, node) pair: both are hashes already; two rounds of
    xor-shift and multiply by odd constants decorrelate the nodes' values for one key."""
    z = (key ^ node) & _MASK
    z ^= z >> 16
    z = (z * 0x7FEB352D) & _MASK
    z ^= z >> 15
    z = (z * 0x2C1B3C6D) & _MASK
    return z ^ (z >> 16)


def score(key: int, node: int, weight: float) -> float:
    """The weighted rendezvous score of ``node`` for ``key``: the highest score wins. A weight of
    0 (or less) scores -1, below any node that may win."""
    if weight <= 0:
        return -1.0
    u = (mix(key, node) + 0.5) * _SCALE  # in (0, 1), never 0 or 1
    return weight / -math.log(u)
