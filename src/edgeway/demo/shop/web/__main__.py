"""``python -m edgeway.demo.shop.web``: serve the web app (EDGEWAY_HOST / EDGEWAY_PORT)."""

from edgeway.demo.shop.web.server import main

main()
