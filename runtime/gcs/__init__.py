"""The gcs: the cluster's control service (nodes, jobs, key-value store, pubsub), and
the storage its tables are written through."""

from ._server import GcsService
from ._storage import Storage, open_storage

__all__ = ["GcsService", "Storage", "open_storage"]
