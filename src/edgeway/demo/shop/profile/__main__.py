"""``python -m edgeway.demo.shop.profile``: run the profile service (settings from EDGEWAY_*)."""

from edgeway.demo.shop.common.runtime import serve
from edgeway.demo.shop.profile.app import create_app

serve(create_app)
