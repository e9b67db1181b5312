"""``python -m edgeway.demo.shop.inventory``: run the inventory service (settings from EDGEWAY_*)."""

from edgeway.demo.shop.inventory.app import create_app
from edgeway.service import serve

serve(create_app)
