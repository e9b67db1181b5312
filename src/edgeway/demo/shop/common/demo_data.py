"""The demo's starting data: products (catalog), their stock (inventory), and the mail sender."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PRODUCTS", "SHOP_EMAIL", "DemoProduct"]

SHOP_EMAIL = "shop@edgeway.example"


class DemoProduct(NamedTuple):
    sku: str
    name: str
    category: str
    price_cents: int
    stock: int
    description: str


PRODUCTS: tuple[DemoProduct, ...] = (
    DemoProduct("CUP-01", "Espresso cup", "cups", 850, 40, "A thick-walled porcelain cup that keeps it hot."),
    DemoProduct("CUP-02", "Cappuccino cup", "cups", 1100, 25, "180 ml, with a saucer."),
    DemoProduct("POT-01", "Moka pot", "brewers", 3400, 12, "Six cups, aluminium, for the gas stove."),
    DemoProduct("PRS-01", "French press", "brewers", 2900, 10, "One litre, borosilicate glass."),
    DemoProduct("GRD-01", "Hand grinder", "grinders", 8900, 6, "Conical steel burrs, 40 settings."),
    DemoProduct("GRD-02", "Electric grinder", "grinders", 15900, 3, "Flat burrs, timed dosing."),
    DemoProduct("BEA-01", "Beans: Ethiopia", "beans", 1450, 100, "250 g, light roast, floral."),
    DemoProduct("BEA-02", "Beans: Brazil", "beans", 1250, 100, "250 g, medium roast, chocolate."),
    DemoProduct("KET-01", "Pour-over kettle", "brewers", 4900, 8, "Gooseneck, 0.9 litre."),
    DemoProduct("SCL-01", "Coffee scale", "tools", 3900, 1, "0.1 g resolution with a timer."),
)
