"""Token verifications per second: edgeway's TokenVerifier with and without its cache, and PyJWT.

    .venv/bin/python bench/verify_bench.py [--seconds 1.0] [--json]

One process, one core. "uncached" verifies a fresh signature every call (cache_size=0);
"cached" repeats one token, as a client does between refreshes; "pyjwt" is jwt.decode with the
same checks, for the record of why verify.py uses ``cryptography`` directly.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import jwt

from edgeway.security.keys import Algorithm, KeyRing
from edgeway.security.tokens import TokenIssuer
from edgeway.security.verify import KeySet, TokenVerifier


def rate(call: Callable[[], object], seconds: float) -> float:
    for _ in range(200):  # warm up
        call()
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            call()
        count += 100
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def bench(alg: Algorithm, seconds: float) -> dict[str, float]:
    ring = KeyRing.generate(alg)
    token = TokenIssuer(ring, "bench", "shop").issue("alice", scope=["a", "b"], roles=["customer"]).token
    keys = KeySet.from_jwks(ring.jwks())
    uncached = TokenVerifier(keys, issuer="bench", audience="shop", cache_size=0)
    cached = TokenVerifier(keys, issuer="bench", audience="shop")
    public = ring.active.public_key
    return {
        "uncached": rate(lambda: uncached.verify(token), seconds),
        "cached": rate(lambda: cached.verify(token), seconds),
        "pyjwt": rate(
            lambda: jwt.decode(token, public, algorithms=[alg], audience="shop", issuer="bench", leeway=30),
            seconds,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = {alg: bench(alg, args.seconds) for alg in ("EdDSA", "ES256")}
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'alg':<6} {'uncached/s':>12} {'cached/s':>12} {'pyjwt/s':>12} {'cache gain':>11}")
    for alg, r in results.items():
        gain = r["cached"] / r["uncached"]
        print(f"{alg:<6} {r['uncached']:>12,.0f} {r['cached']:>12,.0f} {r['pyjwt']:>12,.0f} {gain:>10.0f}x")


if __name__ == "__main__":
    main()
