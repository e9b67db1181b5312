"""``python -m edgeway.demo.shop.profile``: run the profile service (settings from EDGEWAY_*)."""

from edgeway.demo.shop.profile.app import create_app
from edgeway.service import serve

serve(create_app)
