"""``runtime.experimental``: Ray's ``ray.experimental`` names that exist here
(``tqdm_ray``: progress bars of tasks and actors, drawn by their driver;
``internal_kv``: the cluster's key-value store)."""

from . import internal_kv

__all__ = ["internal_kv"]
