"""``edgeway new``: scaffold a service or an edge (gateway or BFF) into a repository.

The files come from copier templates shipped in this package (``templates/service``,
``templates/gateway``); :mod:`edgeway.scaffold.generate` renders them into a temporary directory
first and moves them into the repository only when none of them exists there yet, so a run never
overwrites a file and never leaves half a service behind. Needs the ``scaffold`` extra (copier).
"""
