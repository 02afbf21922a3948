"""The cluster's key-value store (Ray's ``ray.experimental.internal_kv``).

``_internal_kv_put(key, value, overwrite=True, namespace=None)``,
``_internal_kv_get``, ``_internal_kv_exists``, ``_internal_kv_del`` (one key,
or every key with a prefix) and ``_internal_kv_list(prefix)``; keys and values
are bytes or str. The entries live in the gcs for the cluster's lifetime,
apart from the runtime's own.
"""

from ..api import internal_kv_api as _api

_internal_kv_initialized = _api._internal_kv_initialized
_internal_kv_get = _api._internal_kv_get
_internal_kv_exists = _api._internal_kv_exists
_internal_kv_put = _api._internal_kv_put
_internal_kv_del = _api._internal_kv_del
_internal_kv_list = _api._internal_kv_list

__all__ = [
    "_internal_kv_del",
    "_internal_kv_exists",
    "_internal_kv_get",
    "_internal_kv_initialized",
    "_internal_kv_list",
    "_internal_kv_put",
]
