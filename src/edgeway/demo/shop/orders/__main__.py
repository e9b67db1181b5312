"""``python -m edgeway.demo.shop.orders``: run the orders service (settings from EDGEWAY_*)."""

from edgeway.demo.shop.common.runtime import serve
from edgeway.demo.shop.orders.app import create_app

serve(create_app)
