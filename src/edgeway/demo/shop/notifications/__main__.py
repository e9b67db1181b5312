"""``python -m edgeway.demo.shop.notifications``: run the notifications service (EDGEWAY_* settings)."""

from edgeway.demo.shop.notifications.app import create_app
from edgeway.service import serve

serve(create_app)
