"""The third-party images the rendered manifests run, each pinned to a release (never `latest`):
a render is reproducible, and an upgrade is a reviewed change of this file."""

from __future__ import annotations

from typing import Final

NATS: Final = "nats:2.10.24-alpine"
NATS_BOX: Final = "natsio/nats-box:0.14.5"  # the `nats` CLI: creates the buckets
POSTGRES: Final = "postgres:16.6-alpine"
REDIS: Final = "redis:7.4.2-alpine"

# The users the images run as: the edgeway image's own (deploy/Dockerfile), and the ones the
# official images ship (alpine's postgres is 70, redis 999; nats and nats-box need none).
EDGEWAY_UID: Final = 10001
NATS_UID: Final = 1000
POSTGRES_UID: Final = 70
REDIS_UID: Final = 999

# How the edgeway image checks a process (its HEALTHCHECK, and the rendered compose file's): GET
# the URL in $EDGEWAY_HEALTH_URL, with the Python the image has (no curl in a slim image).
HEALTH_PROBE: Final = (
    "python",
    "-c",
    "import os,urllib.request; urllib.request.urlopen(os.environ['EDGEWAY_HEALTH_URL'], timeout=3)",
)
