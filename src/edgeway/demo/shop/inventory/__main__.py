"""``python -m edgeway.demo.shop.inventory``: run the inventory service (settings from EDGEWAY_*)."""

from edgeway.demo.shop.common.runtime import serve
from edgeway.demo.shop.inventory.app import create_app

serve(create_app)
