"""The node's shared-memory object store, served by the raylet."""

from ._access import store_socket_path
from ._server import StoreServer
from ._store import ObjectStore, StoreError, StoreFullError

__all__ = ["ObjectStore", "StoreError", "StoreFullError", "StoreServer", "store_socket_path"]
