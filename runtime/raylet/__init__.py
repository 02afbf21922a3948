"""The raylet: one per node; lease scheduler, worker pool (and later the object store)."""

from ._scheduler import LeaseScheduler
from ._server import Raylet

__all__ = ["LeaseScheduler", "Raylet"]
