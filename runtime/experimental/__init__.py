"""``runtime.experimental``: Ray's ``ray.experimental`` names that exist here
(``tqdm_ray``: progress bars of tasks and actors, drawn by their driver;
``internal_kv``: the cluster's key-value store; ``get_object_locations``:
the nodes that hold objects, and their sizes)."""

from ..api import get_object_locations
from . import internal_kv

__all__ = ["get_object_locations", "internal_kv"]
