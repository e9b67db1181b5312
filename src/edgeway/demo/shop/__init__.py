"""The reference shop: the services ``edgeway demo`` runs, and that the e2e tests start.

Why it lives in the package (``edgeway.demo.shop``) and not in a top-level ``examples/`` folder:
``edgeway demo`` is the first command of the README and must work on an installed package
(``pip install 'edgeway[demo]'``), where only ``src/edgeway`` is shipped; every service starts as
``python -m edgeway.demo.shop.<service>`` from any working directory, without putting a folder on
``sys.path``; and the shop is type-checked (mypy --strict) and linted with the rest of the code, so
it stays a trustworthy example. ``examples/shop/README.md`` points here.

Layout: one subpackage per service (``catalog``, ``inventory``, ``orders``, ``payments``,
``notifications``, ``profile``, ``legacy``), the security service's seed (``security/``), the web
app (``web/``), the edge configs (``edges/``) and the pieces every service shares (``common/``).
"""
