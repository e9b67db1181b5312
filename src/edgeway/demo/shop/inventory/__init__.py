"""The inventory service: stock per product and the reservations the order saga holds."""
