"""``python -m edgeway.demo.shop.legacy``: run the legacy monolith (settings from EDGEWAY_*)."""

from edgeway.demo.shop.legacy.app import main

main()
