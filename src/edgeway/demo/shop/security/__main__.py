"""``python -m edgeway.demo.shop.security``: the security service with the shop's seed.

Settings come from ``EDGEWAY_SECURITY_*`` as for ``edgeway security serve``; the seed defaults
to the shop's, logs are JSON lines like every other process, and the port is ``EDGEWAY_PORT``.
It serves HTTPS when the kit's ``EDGEWAY_TLS_*`` settings say so (``edgeway demo --tls``).
"""

from __future__ import annotations

import os

import uvicorn

from edgeway.demo.shop.security import SEED_FILE
from edgeway.observability.logs import setup_logging
from edgeway.security_service import create_security_app
from edgeway.security_service.settings import SecuritySettings
from edgeway.service.backing import quiet_libraries
from edgeway.service.http import HeadOnlyHttpTools
from edgeway.service.settings import ServiceSettings
from edgeway.service.tls import uvicorn_tls_options

settings = SecuritySettings()
if settings.seed_file is None:
    settings = settings.model_copy(update={"seed_file": SEED_FILE})
setup_logging("security", os.environ.get("EDGEWAY_LOG_LEVEL", "info"))
quiet_libraries()
uvicorn.run(
    create_security_app(settings),
    host=os.environ.get("EDGEWAY_HOST", "127.0.0.1"),
    port=int(os.environ.get("EDGEWAY_PORT", "8400")),
    log_config=None,
    access_log=False,
    http=HeadOnlyHttpTools,
    # HTTPS when EDGEWAY_TLS_CERT/KEY are set (edgeway demo --tls)
    **uvicorn_tls_options(ServiceSettings()),
)
