"""``python -m edgeway.demo.shop.catalog``: run one catalog instance (settings from EDGEWAY_*)."""

from edgeway.demo.shop.catalog.app import create_app
from edgeway.service import serve

serve(create_app)
