"""``python -m edgeway.demo.shop.payments``: run the payments service (settings from EDGEWAY_*)."""

from edgeway.demo.shop.common.runtime import serve
from edgeway.demo.shop.payments.app import create_app

serve(create_app)
