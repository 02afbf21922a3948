"""The gcs: the cluster's control service (nodes, jobs, key-value store, pubsub)."""

from ._server import GcsService

__all__ = ["GcsService"]
