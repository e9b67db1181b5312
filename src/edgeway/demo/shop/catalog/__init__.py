"""The catalog service: products and prices; publishes ProductChanged and PriceChanged.

Runs as two instances over one database to show load balancing (``X-Served-By`` names the one
that answered).
"""
