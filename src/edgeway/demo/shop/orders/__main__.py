"""``python -m edgeway.demo.shop.orders``: run the orders service (settings from EDGEWAY_*)."""

from edgeway.demo.shop.orders.app import create_app
from edgeway.service import serve

serve(create_app)
