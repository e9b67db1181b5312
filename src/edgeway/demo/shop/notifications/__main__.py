"""``python -m edgeway.demo.shop.notifications``: run the notifications service (EDGEWAY_* settings)."""

from edgeway.demo.shop.common.runtime import serve
from edgeway.demo.shop.notifications.app import create_app

serve(create_app)
