"""edgeway: the edge and the wiring of a Python microservice system."""

__version__ = "0.1.0"
