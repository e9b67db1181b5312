"""The system file: one description of a whole system (services, edges, broker, stores) that
``edgeway demo`` runs on one machine and ``edgeway deploy render`` turns into Kubernetes manifests
or a compose file. See docs/deploy.md.

- :mod:`.model`: the pydantic model of ``edgeway.system.yaml``;
- :mod:`.loader`: reading it with the gateway config loader (file:line:col errors) and the
  checks across entries;
- :mod:`.wiring`: where each process is reached on a target, and the environment that says so.
"""

from __future__ import annotations

from edgeway.system.loader import LoadedSystem, grpc_port_name, instance_names, load_system, process_ports
from edgeway.system.model import Edge, Service, System
from edgeway.system.wiring import Placement, edge_env, env_key, local_placement, service_env, wiring_env

__all__ = [
    "Edge",
    "LoadedSystem",
    "Placement",
    "Service",
    "System",
    "edge_env",
    "env_key",
    "grpc_port_name",
    "instance_names",
    "load_system",
    "local_placement",
    "process_ports",
    "service_env",
    "wiring_env",
]
