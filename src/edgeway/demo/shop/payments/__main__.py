"""``python -m edgeway.demo.shop.payments``: run the payments service (settings from EDGEWAY_*)."""

from edgeway.demo.shop.payments.app import create_app
from edgeway.service import serve

serve(create_app)
