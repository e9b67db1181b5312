"""From a system file to a cluster: ``edgeway deploy render --target kubernetes|compose``.

- :mod:`.placement`: where each process is reached on a cluster or in a compose project;
- :mod:`.edges`: each edge's gateway config files, with the target's service discovery on top;
- :mod:`.secrets`: the admin token, the signing keys and their key-encryption key, the database
  password, generated once and kept;
- :mod:`.kubernetes`, :mod:`.kubernetes_backing`: Kustomize-ready manifests (base + overlay);
- :mod:`.compose`: a compose project;
- :mod:`.render`: both, checked whole before anything is written.

``templates/`` holds the image recipe a scaffolded service copies. See docs/deploy.md.
"""

from pathlib import Path

# The image recipe (and its .dockerignore) a scaffolded service copies.
TEMPLATES = Path(__file__).parent / "templates"

__all__ = ["TEMPLATES"]
